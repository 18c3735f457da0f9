"""Applying an update bundle on the device (the format: :mod:`..bundle.update`).

``install`` of a staged update, after its signature verified: the installed version whose base.onnx
has the update's fingerprint (``current`` first) is the base; the full bundle of the new weights is
built beside it in ``ROOT/.apply/<version>`` (the new base.onnx from the base delta, the files the
update ships, the files it reuses copied from the base version, the signed update kept under
``update/``), verified as a whole like any bundle, and only then moved to ``versions/``.  A stored
TensorRT engine is carried by refitting a copy of it with the new weights (no rebuild).  Any
failure leaves the versions, ``current`` and the state as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Tuple

from ..bundle import manifest as M
from ..bundle import safeio
from ..bundle import update as U
from ..bundle.names import FieldError
from ..bundle.reader import Bundle
from ..errors import BundleError, CodecError, DeployError
from ..files import fault_point, write_json_atomic
from .fsutil import read_json

APPLY = ".apply"


def staged_update(folder: str) -> Optional[U.Update]:
    """The parsed update manifest of a staged folder (None: a full bundle)."""
    path = os.path.join(folder, M.MANIFEST)
    try:
        with open(path, "rb") as f:
            data = f.read(M.MAX_MANIFEST_BYTES + 1)
    except OSError:
        return None
    try:
        d = U.loads(data)
    except M.ManifestError:
        return None
    return U.check_parse(d, path)


def base_sha(folder: str) -> Optional[str]:
    """The base.onnx sha256 an installed version's manifest names (None: unreadable)."""
    m = read_json_quiet(os.path.join(folder, M.MANIFEST))
    sha = m.get("base", {}).get("sha256") if isinstance(m, dict) and isinstance(m.get("base"), dict) else None
    return sha if isinstance(sha, str) else None


def read_json_quiet(path: str):
    try:
        return read_json(path, None)
    except (OSError, DeployError):
        return None


def installed_bases(target) -> Dict[str, str]:
    """{base.onnx sha256: version} of the versions installed here (``current`` wins a tie)."""
    out: Dict[str, str] = {}
    current = target.current()
    for v in sorted(target.installed(), key=lambda v: v == current):
        sha = base_sha(target.p("versions", v))
        if sha:
            out[sha] = v
    return out


def find_base(target, update: U.Update) -> str:
    """The installed version the update applies to, or one DeployError saying why there is none."""
    bases = installed_bases(target)
    if update.base_sha256 in bases:
        return bases[update.base_sha256]
    release = "" if update.base_release is None else " (release {})".format(update.base_release)
    if not bases:
        have = "no version is installed here"
    else:
        cur = target.current()
        shown = ["{} base {}{}".format(v, h[:12], " (current)" if v == cur else "") for h, v in sorted(bases.items())]
        have = "installed here: {}".format(", ".join(shown))
    raise DeployError(
        "{}: the update applies to base {}{}, which is not installed ({}); deploy a full bundle of that "
        "network or of the new one instead".format(target.root, update.base_sha256[:12], release, have)
    )


def lineage(folder: str, version: str) -> Dict[str, Any]:
    """Which base an installed version runs and which updates were applied on top of it."""
    applied = read_json_quiet(os.path.join(folder, U.FOLDER, U.APPLIED))
    if isinstance(applied, dict) and isinstance(applied.get("lineage"), dict):
        return applied["lineage"]
    m = read_json_quiet(os.path.join(folder, M.MANIFEST)) or {}
    release = m.get("release", 0) if isinstance(m, dict) else 0
    return {"base": {"version": version, "sha256": base_sha(folder), "release": release}, "updates": []}


def build(target, version: str, staged: str, update: U.Update) -> Tuple[str, Dict[str, Any]]:
    """Build the full bundle the staged *update* gives in ``ROOT/.apply/<version>`` and verify it;
    returns (that folder, what was done).  Raises with nothing installed or switched."""
    t0 = time.perf_counter()
    base_version = find_base(target, update)
    base_dir = target.p("versions", base_version)
    work = target.p(APPLY, version)
    if os.path.lexists(work):
        shutil.rmtree(work)  # what an interrupted apply left
    os.makedirs(work)
    try:
        info = _fill(work, staged, base_dir, update)
        info.update(update_of=base_version, base=update.base_sha256[:12])
        line = lineage(base_dir, base_version)
        line = dict(line, updates=list(line.get("updates", [])) + [{"version": version, "release": update.release}])
        write_json_atomic(os.path.join(work, U.FOLDER, U.APPLIED), {"base_version": base_version, "lineage": line})
        fault_point("target:update:built")
        b = Bundle.open(work)  # the result, verified as a whole like any bundle
        b.close()
        fault_point("target:update:verified")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    info["apply_seconds"] = round(time.perf_counter() - t0, 4)
    return work, info


def _fill(work: str, staged: str, base_dir: str, update: U.Update) -> Dict[str, Any]:
    """The result's files in *work*: base.onnx rebuilt, shipped files copied, reused ones taken from
    the base version, the manifest, and the signed update under ``update/``."""
    shown = os.path.join(staged, M.MANIFEST)
    base = Bundle.open(base_dir, verify=False)
    try:
        try:
            result = U.result_manifest(update, base.manifest)
        except FieldError as exc:
            raise BundleError(shown, str(exc)) from None
        old = base.base_onnx()  # read and checked against the installed manifest: a damaged base stops here
        delta = _read(staged, update.base_delta)
        try:
            new = U.new_base(update, base.layout, old, delta)
        except (CodecError, ValueError) as exc:
            raise BundleError(os.path.join(staged, update.base_delta.file), str(exc)) from None
        fault_point("target:update:decoded")
        if U.sha256_bytes(new) != result["base"]["sha256"]:
            raise BundleError(
                os.path.join(staged, update.base_delta.file),
                "applied to the installed base it does not give the base.onnx the update names (another base?)",
            )
        _write(work, result["base"]["file"], new)
        for e in update.shipped:
            _write(work, e.file, _read(staged, e))
        entries = {f.file: f for f in M.parse(result).files()}
        for rel in update.reused:
            _write(work, rel, _read(base_dir, entries[rel]))
        engines = _carry_engines(work, base, new, update)
    finally:
        base.close()
    os.makedirs(os.path.join(work, U.FOLDER), exist_ok=True)
    for rel in (M.MANIFEST, "manifest.sig", update.base_delta.file):
        src = os.path.join(staged, rel)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(work, U.FOLDER, os.path.basename(rel)))
    write_json_atomic(os.path.join(work, M.MANIFEST), dict(result, engines=engines))
    return {"rebuilt": "base.onnx", "shipped": [e.file for e in update.shipped], "reused": list(update.reused)}


def _read(root: str, entry) -> bytes:
    """A file of *root* as its entry declares it (size, sha256), read at most that size."""
    shown = os.path.join(root, entry.file)
    data = safeio.read_capped(root, entry.file, entry.size, shown)
    if U.sha256_bytes(data) != entry.sha256:
        raise BundleError(shown, "sha256 mismatch (corrupt or replaced file)")
    return data


def _write(work: str, rel: str, data: bytes) -> None:
    path = os.path.join(work, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _carry_engines(work: str, base: Bundle, new_model: bytes, update: U.Update) -> List[dict]:
    """The base version's stored TensorRT engines, each a copy refitted with the new weights
    (:mod:`..trt.update_refit`); none where the base has none."""
    entries = [e for e in base.manifest.get("engines", []) if isinstance(e, dict)]
    if not entries:
        return []
    from ..trt.update_refit import refit_copies

    return refit_copies(work, base, entries, new_model, update.changed)


def dump(info: Dict[str, Any]) -> str:
    return json.dumps(info, sort_keys=True)
