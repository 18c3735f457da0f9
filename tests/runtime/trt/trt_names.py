"""The names each TensorRT version's Python bindings register, read from their wheels without TensorRT.

A ``tensorrt*.so`` of the bindings wheels cannot be imported without libnvinfer, but its string
table holds every class, enum member, method and property name pybind11 registers.  The wheel is
downloaded once (``pip download``) into the cache folder (``$EDGETOOL_TRT_BINDINGS``, default
``~/.cache/edgetool-test/trt-bindings``), and the strings of its ``.so`` are kept beside it as JSON.

A name is present when it is one NUL-terminated string of its own (``exact``).  The linker may
merge a short string into the tail of a longer one (``REFIT`` into ``INCLUDE_REFIT`` in 11.4,
``INT8`` into ``UINT8``), so a name found only as the tail of a longer string counts too and is
reported as ``tail``: a weaker proof, since the longer string may belong to another name.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from typing import Dict, List, Optional, Tuple

# (distribution, version): the bindings the checker knows.  8.6.1 and 10.3.0 are published as
# manylinux_2_17 wheels, 10.13.0.35 and 11.4.0.106 as manylinux_2_28 ones.
WHEELS: List[Tuple[str, str]] = [
    ("tensorrt-bindings", "8.6.1"),  # JetPack 6.0's TensorRT is 8.6.2; 8.6.1 is the closest published bindings
    ("tensorrt-cu12-bindings", "10.3.0"),  # JetPack 6.1 / 6.2
    ("tensorrt-cu12-bindings", "10.13.0.35"),
    ("tensorrt-cu13-bindings", "11.4.0.106"),
]
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64")
DOWNLOAD_TIMEOUT_S = 150  # all downloads together, the first time (a slow or unreachable registry: skip)
_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*\Z")
_TAIL = re.compile(rb"[A-Za-z0-9_]+\Z")


class Unavailable(Exception):
    """A wheel could not be downloaded or read (the reason is the message)."""


def cache_dir() -> str:
    return os.environ.get("EDGETOOL_TRT_BINDINGS") or os.path.join(
        os.path.expanduser("~"), ".cache", "edgetool-test", "trt-bindings"
    )


def version_tuple(version: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class NameTable:
    """The names of one version: ``find(name)`` is ``"exact"``, ``"tail"`` or None."""

    def __init__(self, version: str, names, tails):
        self.version, self.names = version, set(names)
        self.vtuple = version_tuple(version)
        # last 3 characters -> (string, whether it is a whole identifier): a name must be a proper
        # tail of an identifier, or any tail of a longer string that is not one
        self._by_end: Dict[str, List[Tuple[str, bool]]] = {}
        for s, whole in [(s, True) for s in self.names] + [(s, False) for s in set(tails)]:
            self._by_end.setdefault(s[-3:], []).append((s, whole))

    def find(self, name: str) -> Optional[str]:
        if name in self.names:
            return "exact"
        pool = self._by_end.get(name[-3:], []) if len(name) >= 3 else [e for v in self._by_end.values() for e in v]
        return "tail" if any(s.endswith(name) and (len(s) > len(name) or not whole) for s, whole in pool) else None

    def __repr__(self):
        return "NameTable({})".format(self.version)


def strings_of(so: bytes) -> Tuple[List[str], List[str]]:
    """(identifiers that are whole NUL-terminated strings, the identifier tails of every other string)."""
    names, tails = set(), set()
    for s in so.split(b"\0"):
        if _IDENT.match(s):
            names.add(s.decode("ascii"))
        else:
            m = _TAIL.search(s)
            if m:
                tails.add(m.group().decode("ascii"))
    return sorted(names), sorted(tails)


def download(dist: str, version: str, folder: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """The wheel of *dist*==*version* in *folder*, downloaded there first when missing (within *timeout* s)."""
    stem = "{}-{}-".format(dist.replace("-", "_"), version)
    found = sorted(glob.glob(os.path.join(folder, stem + "*.whl")))
    if found:
        return found[0]
    os.makedirs(folder, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11"]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    cmd += ["--timeout", "20", "--retries", "1", "--disable-pip-version-check", "-q", "-d", folder]
    if timeout <= 0:
        raise Unavailable("no time left to download {}=={} (limit {} s)".format(dist, version, DOWNLOAD_TIMEOUT_S))
    try:
        proc = subprocess.run(cmd + ["{}=={}".format(dist, version)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Unavailable("pip download {}=={} took over {:.0f} s".format(dist, version, timeout)) from None
    found = sorted(glob.glob(os.path.join(folder, stem + "*.whl")))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise Unavailable("pip download {}=={} failed: {}".format(dist, version, last))
    return found[0]


def load(dist: str, version: str, folder: Optional[str] = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> NameTable:
    """The name table of one wheel, from its cached JSON, else from the (downloaded) wheel."""
    folder = folder or cache_dir()
    cached = os.path.join(folder, "{}-{}.names.json".format(dist, version))
    if os.path.isfile(cached):
        with open(cached) as f:
            data = json.load(f)
        return NameTable(version, data["names"], data["tails"])
    wheel = download(dist, version, folder, timeout)
    try:
        with zipfile.ZipFile(wheel) as z:
            members = [n for n in z.namelist() if re.search(r"(^|/)tensorrt[^/]*\.so$", n)]
            if not members:
                raise Unavailable("{}: no tensorrt*.so inside".format(wheel))
            names, tails = strings_of(z.read(members[0]))
    except zipfile.BadZipFile as exc:
        raise Unavailable("{}: {}".format(wheel, exc)) from None
    tmp = cached + ".tmp{}".format(os.getpid())
    with open(tmp, "w") as f:
        json.dump({"wheel": os.path.basename(wheel), "so": members[0], "names": names, "tails": tails}, f)
    os.replace(tmp, cached)
    return NameTable(version, names, tails)


def load_all(folder: Optional[str] = None) -> Dict[str, NameTable]:
    """Every known version's table, by version string (raises :class:`Unavailable`)."""
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT_S
    return {version: load(dist, version, folder, deadline - time.monotonic()) for dist, version in WHEELS}
