"""A bundle as a Mender artifact (``edgetool mender artifact``), written by Mender's own ``mender-artifact``.

The artifact is a module-image of type ``edgetool-bundle`` (the name of the update module that
installs it, :mod:`.module`) with one payload file, ``bundle.stream``: the bundle's files as a
deploy sends them over SSH to ``edgetool target receive`` (per file a JSON line with its name, size
and sha256, then its bytes), so the device receives it with the same code.  The artifact provides
``edgetool-bundle.version`` (the version name a deploy gives the bundle) and
``edgetool-bundle.release`` (the anti-rollback release of its signed manifest), and clears both on
install, so the provides Mender records on a device are those of the version serving there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Dict, Sequence

from ..errors import DeployError, MissingDependencyError, UsageError
from ..files import atomic_path, check_output, temp_prefix

TYPE = "edgetool-bundle"
PAYLOAD = "bundle.stream"
RELEASE_KEY = TYPE + ".release"
VERSION_KEY = TYPE + ".version"
TOOL = "mender-artifact"
CHUNK = 1 << 20


def write_payload(source, path: str) -> int:
    """The framed files of *source* (a :class:`~..deploy.driver.Source`) in *path*; returns its size."""
    from ..deploy.driver import file_header

    total = 0
    with open(path, "wb") as out:
        for rel, size, sha in source.files:
            head = file_header(rel, size, sha)
            out.write(head)
            with open(source.path(rel), "rb") as f:
                copied = _copy(f, out, size)
            if copied != size:
                raise DeployError("{}: changed while the artifact was written".format(source.path(rel)))
            total += len(head) + size
    return total


def _copy(src, dst, size: int) -> int:
    done = 0
    while done < size:
        chunk = src.read(min(CHUNK, size - done))
        if not chunk:
            break
        dst.write(chunk)
        done += len(chunk)
    return done


def _check_word(value: str, what: str) -> str:
    """A device type or artifact name: one printable word (Mender shows and compares it as given)."""
    if not value or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value) or value.startswith("-"):
        raise UsageError("{} {!r}: give one word without spaces or control characters".format(what, value))
    return value


def write_artifact(bundle_path: str, out: str, device_types: Sequence[str], name=None) -> Dict:
    """Write *bundle_path* as the Mender artifact *out* for *device_types*; returns what it holds."""
    from ..bundle.reader import Bundle
    from ..deploy.driver import Source

    if not device_types:
        raise UsageError("give --device-type (the device_type of the Mender devices that take this bundle)")
    for t in device_types:
        _check_word(t, "--device-type")
    if name is not None:
        _check_word(name, "--name")
    check_output(out, "--out")
    with Bundle.open(bundle_path) as b:
        tool = shutil.which(TOOL)
        if tool is None:
            raise MissingDependencyError(TOOL)
        source = Source(b)
        info = {
            "out": out,
            "type": TYPE,
            "name": name or source.version,
            "version": source.version,
            "release": source.release,
            "signed_by": source.key_id if source.signed else None,
            "device_types": list(device_types),
            "files": len(source.files),
        }
        folder, base = os.path.split(os.path.abspath(out))
        with tempfile.TemporaryDirectory(prefix=temp_prefix(base), dir=folder) as tmp:
            payload = os.path.join(tmp, PAYLOAD)
            info["payload_bytes"] = write_payload(source, payload)
            with atomic_path(out) as target:
                _run_tool(tool, info, payload, target)
    return info


def _run_tool(tool: str, info: Dict, payload: str, target: str) -> None:
    argv = [tool, "write", "module-image", "--type", TYPE, "--artifact-name", info["name"]]
    for t in info["device_types"]:
        argv += ["--device-type", t]
    argv += ["--file", payload, "--no-default-software-version", "--no-default-clears-provides"]
    argv += ["--provides", "{}:{}".format(VERSION_KEY, info["version"])]
    argv += ["--provides", "{}:{}".format(RELEASE_KEY, info["release"])]
    argv += ["--clears-provides", TYPE + ".*", "--output-path", target]
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True
        )
    except OSError as exc:
        raise DeployError("{}: cannot run ({})".format(tool, exc.strerror)) from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
        raise DeployError(
            "{} failed (exit status {}): {}".format(TOOL, proc.returncode, lines[-1] if lines else "no output")
        )
