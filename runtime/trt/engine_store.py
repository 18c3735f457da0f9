"""Engines stored in a bundle: pick the one built for this device, or add one built here.

A plan only loads into the TensorRT version and GPU that built it, so :func:`select_engine`
picks the bundle's engine for this device or says which one to build.  :func:`add_engine`
writes a device-built plan into the bundle and lists it in the manifest, as one atomic
change: the manifest's rename is the only commit point.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Iterator, Mapping, Optional, Sequence

from .. import commands
from ..bundle import manifest as M
from ..bundle import safeio
from ..errors import BundleError, DeviceError, UsageError
from ..bundle.names import FieldError
from ..files import TMP_TAG, commit, fault_point, fsync_dir, sha256_file, slug, stale_temps, write_temp
from ..bundle.weights import sha256_bytes

ENGINES = "engines"
# engines/<device profile>-<precision>-<first 12 hex digits of the plan's sha256>.plan
_PLAN = re.compile(r"\A[A-Za-z0-9._-]+-[a-z0-9]+-([0-9a-f]{12})\.plan\Z")


def select_engine(
    entries: Sequence[Mapping], tensorrt: str, device: str, precision: Optional[str] = None, bundle: str = "BUNDLE"
) -> Optional[Mapping]:
    """The stored engine built by TensorRT *tensorrt* on GPU *device* (of *precision*, if given).

    ``None`` when the bundle has no engine of that precision: the caller builds one. When it
    has engines but none from this TensorRT and GPU, loading one would fail inside
    TensorRT, so this raises one line that lists them and names the command to run.
    """
    candidates = [e for e in entries if precision is None or e.get("precision") == precision]
    if not candidates:
        return None
    for e in candidates:
        if e.get("tensorrt") == tensorrt and e.get("device") == device:
            return e
    have = ", ".join(
        "{} ({}, TensorRT {})".format(e.get("file"), e.get("device", "?"), e.get("tensorrt", "?")) for e in candidates
    )
    raise DeviceError(
        "no engine in the bundle was built on this {} with TensorRT {} (it has: {}); run: {}".format(
            device, tensorrt, have, commands.engine_build(bundle)
        )
    )


def add_engine(bundle_dir: str, plan: bytes, meta: dict) -> dict:
    """Save a device-built engine into the bundle folder and list it in the manifest, atomically.

    An engine of the same device profile and precision is replaced; nothing else is touched.

    1. The plan goes to a temporary file in ``engines/``, flushed to disk, then renamed to a
       name of its own (its sha256 is part of it): no file the manifest lists is overwritten.
    2. The manifest goes to a temporary sibling, flushed, and is renamed over
       ``manifest.json``: that rename is the commit.
    3. Then the plan it replaced is removed.

    Killed at any point, the bundle holds the previous manifest and every file it lists, or
    the new ones; what a stopped run leaves (its temporary files, or a plan it renamed but
    never listed) is removed by the next ``add_engine``.  Runs on one bundle take turns
    (an advisory lock on the bundle folder).
    """
    if not os.path.isdir(bundle_dir) or os.path.islink(bundle_dir):
        raise UsageError("{}: engines are saved into a bundle folder; unpack the archive first".format(bundle_dir))
    with _locked(bundle_dir):
        manifest = _read_manifest(bundle_dir)
        engines_dir = os.path.join(bundle_dir, ENGINES)
        if os.path.islink(engines_dir) or (os.path.lexists(engines_dir) and not os.path.isdir(engines_dir)):
            raise BundleError(engines_dir, "not a folder (refused: {})".format(safeio.REFUSED))
        os.makedirs(engines_dir, exist_ok=True)
        old = [e for e in manifest.get("engines", []) if isinstance(e, dict)]
        _remove_leftovers(bundle_dir, engines_dir, {e.get("file") for e in old})
        digest = sha256_bytes(plan)
        name = "{}-{}-{}.plan".format(
            slug(str(meta.get("device_profile", "device"))), slug(str(meta.get("precision", "int8"))), digest[:12]
        )
        rel = "{}/{}".format(ENGINES, name)
        entry = dict(meta, file=rel, size=len(plan), sha256=digest)
        replaced = [e for e in old if _same_slot(e, entry)]
        manifest["engines"] = [e for e in old if not _same_slot(e, entry)] + [entry]
        try:
            M.parse(manifest)  # the manifest written is one the reader accepts
        except FieldError as exc:
            raise UsageError("engine metadata: {}".format(exc)) from None
        _save(bundle_dir, rel, plan, manifest, listed={e.get("file") for e in old})
        for e in replaced:
            if e.get("file") != rel:
                _remove_plan(bundle_dir, e.get("file"))
        fsync_dir(engines_dir)
        return entry


def _save(bundle_dir: str, rel: str, plan: bytes, manifest: dict, listed: set) -> None:
    """Plan to its own name, then the manifest over the old one (the commit); undone on a failure."""
    engines_dir, name = os.path.split(os.path.join(bundle_dir, rel))
    plan_path, path = os.path.join(engines_dir, name), os.path.join(bundle_dir, M.MANIFEST)
    placed, tmp = False, None
    try:
        tmp = write_temp(plan_path, plan)
        fault_point("engine:plan-written")
        commit(tmp, plan_path)
        tmp, placed = None, rel not in listed  # a plan the old manifest does not list
        fault_point("engine:plan-renamed")
        tmp = write_temp(path, json.dumps(manifest, indent=1).encode("utf-8"))
        fault_point("engine:manifest-written")
        commit(tmp, path)
        tmp, placed = None, False
        fault_point("engine:manifest-renamed")
    except BaseException as exc:  # an error or a signal: the previous store is exactly as it was
        if tmp is not None and os.path.isfile(tmp):
            os.remove(tmp)
        if placed:
            _remove_plan(bundle_dir, rel)
        if isinstance(exc, OSError):
            raise BundleError(plan_path, "cannot save the engine ({})".format(exc.strerror or exc)) from None
        raise


def _same_slot(a: Mapping, b: Mapping) -> bool:
    """One engine per device profile and precision."""
    return a.get("device_profile") == b.get("device_profile") and a.get("precision") == b.get("precision")


@contextlib.contextmanager
def _locked(folder: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, one writer is assumed
        yield
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_manifest(bundle_dir: str) -> dict:
    shown = os.path.join(bundle_dir, M.MANIFEST)
    fd = safeio.open_inside(bundle_dir, M.MANIFEST, shown)
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(M.MAX_MANIFEST_BYTES + 1)
        manifest = M.loads(data)
        M.parse(manifest)
    except OSError as exc:
        raise BundleError(shown, "cannot read ({})".format(exc.strerror)) from None
    except (M.ManifestError, FieldError) as exc:  # the field and the problem
        raise BundleError(shown, str(exc)) from None
    return manifest


def _remove_leftovers(bundle_dir: str, engines_dir: str, listed: set) -> None:
    """What a stopped add_engine left: its temporary files, and plans it renamed but never listed
    (recognised by name: the sha256 prefix in a plan's name must be its content's)."""
    for p in stale_temps(bundle_dir, M.MANIFEST):
        os.remove(p)
    for name in sorted(os.listdir(engines_dir)):
        if "{}/{}".format(ENGINES, name) in listed:
            continue
        p = os.path.join(engines_dir, name)
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        m = _PLAN.match(name)
        if name.startswith(".") and _PLAN.match(name[1:].split(TMP_TAG, 1)[0]) and TMP_TAG in name:
            os.remove(p)  # a temporary plan: "." + plan name + TMP_TAG + random
        elif m and sha256_file(p).startswith(m.group(1)):
            os.remove(p)


def _remove_plan(bundle_dir: str, rel) -> None:
    """Remove a plan the manifest no longer lists (only a regular file inside engines/)."""
    if not isinstance(rel, str) or not rel.startswith(ENGINES + "/") or "/" in rel[len(ENGINES) + 1 :]:
        return
    p = os.path.join(bundle_dir, rel)
    if os.path.isfile(p) and not os.path.islink(p):
        try:
            os.remove(p)
        except OSError:
            pass  # an unlisted file left behind; the bundle is valid either way
