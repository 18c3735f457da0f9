"""Update bundles: a retrained network shipped as an exact int8 delta against the base a device runs.

An update bundle is a folder (``edgetool export RUN --update-of BUNDLE``)::

    manifest.json        schema edgetool.update/1: its release; the base it applies to (the sha256
                         of that bundle's base.onnx, its fingerprint, and of its refit layout); the
                         base delta; the files shipped and those reused from the installed version;
                         the resulting bundle's manifest, less the refit layout (the base's, unchanged)
    manifest.sig         an Ed25519 signature, as for a full bundle; through the sha256s it covers
                         every file, and the result
    update/base.<ext>    the new base weights as an exact delta against the installed base's packed
                         weights (:meth:`.weights.PackedLayout.make_exact_delta`), under a delta codec
    deltas/..., samples.npy
                         only the files of the result whose bytes differ from the base's

Applied to the installed base, it gives the full bundle of the new weights: ``base.onnx`` is the
base's with the refittable initializers' bytes replaced (:func:`.onnx_weights.with_initializers`),
so it must hash to the sha256 the result names, and the result is then verified as a whole like
any bundle.  Nothing else is rebuilt: the graph, the scales and the engine stay.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import codecs
from . import manifest as M
from . import names as N
from .names import FieldError, check, fail
from .onnx_weights import read_initializers, with_initializers
from .weights import PackedLayout, sha256_bytes

SCHEMA = "edgetool.update/1"
FOLDER = "update"  # the base delta in the update; the signed update, kept, in an installed version
APPLIED = "applied.json"  # in an installed version's update/: the version it was applied to, and its lineage


@dataclass(frozen=True)
class Update:
    raw: dict
    release: int
    base_sha256: str  # the fingerprint: sha256 of the base.onnx it applies to
    base_release: Optional[int]
    refit_sha256: str  # sha256 of that base's refit layout (canonical JSON): the same graph and scales
    base_delta: M.Delta
    changed: Tuple[str, ...]  # the packed tensors the base delta changes
    shipped: Tuple[M.FileEntry, ...]
    reused: Tuple[str, ...]
    result: dict  # the resulting manifest without "refit"

    def files(self):
        return [self.base_delta] + list(self.shipped)


def canonical_sha256(obj) -> str:
    """sha256 of *obj* as canonical JSON (sorted keys, no spaces): equal content, equal hash."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def refit_sha256(refit: dict) -> str:
    """The fingerprint of a refit layout: every tensor's name, place, shape and scales (not
    ``changed``, which an update may set anew)."""
    return canonical_sha256({k: v for k, v in refit.items() if k != "changed"})


def is_update(d) -> bool:
    return isinstance(d, dict) and d.get("schema") == SCHEMA


def loads(data: bytes) -> dict:
    """An update manifest's JSON (what :func:`.manifest.loads` checks, for this schema)."""
    if len(data) > M.MAX_MANIFEST_BYTES:
        raise M.ManifestError("{} bytes, more than the {} allowed".format(len(data), M.MAX_MANIFEST_BYTES))
    try:
        d = json.loads(data.decode("utf-8"), parse_constant=M._no_constant)
    except RecursionError:
        raise M.ManifestError("not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise M.ManifestError("not valid JSON ({})".format(exc)) from None
    if not is_update(d):
        raise M.ManifestError("not an update manifest (schema {!r})".format(SCHEMA))
    return d


def _sha(value, where: str) -> str:
    if not isinstance(value, str) or not M._SHA.match(value):
        fail(where, "missing or not 64 lowercase hex digits")
    return str(value)


def parse(d: dict) -> Update:
    """Check every field of an update manifest (raises :class:`.names.FieldError`)."""
    release = check(d.get("release"), "release", int, 0, M.MAX_RELEASE)
    to = check(d.get("applies_to"), "applies_to", dict)
    base_sha = _sha(to.get("base_sha256"), "applies_to.base_sha256")
    refit_sha = _sha(to.get("refit_sha256"), "applies_to.refit_sha256")
    base_release = to.get("release")
    if base_release is not None:
        base_release = check(base_release, "applies_to.release", int, 0, M.MAX_RELEASE)
    b = check(d.get("base_delta"), "base_delta", dict)
    raw_size = check(b.get("raw_size"), "base_delta.raw_size", int, 256, M.MAX_FILE_BYTES)
    f = M._file(b, "base_delta", raw_size + raw_size // 8 + 65536, FOLDER)
    codec = b.get("codec")
    if codec not in M.CODECS:
        fail("base_delta.codec", "{!r} is not one of {}".format(N.shown(codec), ", ".join(M.CODECS)))
    raw_sha = _sha(b.get("raw_sha256"), "base_delta.raw_sha256")
    delta = M.Delta(f.file, f.size, f.sha256, 0, "base", str(codec), raw_size, raw_sha)
    changed = [N.name(n, "base_delta.changed[{}]".format(i), path=False) for i, n in enumerate(
        check(b.get("changed", []), "base_delta.changed", list))]  # fmt: skip
    shipped = tuple(
        M._file(check(e, "files[{}]".format(i), dict), "files[{}]".format(i), M.MAX_FILE_BYTES)
        for i, e in enumerate(check(d.get("files", []), "files", list))
    )
    reused = tuple(
        N.relpath(r, "reused[{}]".format(i)) for i, r in enumerate(check(d.get("reused", []), "reused", list))
    )
    result = check(d.get("result"), "result", dict)
    if result.get("release") != release:
        fail("result.release", "is {}, the update's release is {}".format(N.shown(result.get("release")), release))
    if set(check(result.get("refit", {}), "result.refit", dict)) - {"changed"}:
        fail("result.refit", "holds only refit.changed (the rest is the installed base's layout)")
    paths = [delta.file] + [e.file for e in shipped] + list(reused)
    if len(set(paths)) != len(paths) or M.MANIFEST in paths or "base.onnx" in paths:
        fail("files", "two entries name the same file, or one names manifest.json or base.onnx")
    return Update(d, release, base_sha, base_release, refit_sha, delta, tuple(changed), shipped, reused, result)


def result_manifest(update: Update, base_manifest: dict) -> dict:
    """The full manifest the update gives on top of *base_manifest* (its refit layout, checked by
    sha256), validated as a whole; raises :class:`.names.FieldError` naming the field."""
    installed = base_manifest.get("refit")
    if not isinstance(installed, dict) or refit_sha256(installed) != update.refit_sha256:
        fail("applies_to.refit_sha256", "the installed base has another refit layout (another graph or scales)")
    refit = {k: v for k, v in dict(installed or {}).items() if k != "changed"}
    refit.update(update.result.get("refit", {}))
    out: Dict[str, object] = {}
    for key, value in update.result.items():
        if key == "deltas":
            out["refit"] = refit
        if key != "refit":
            out[key] = value
    out.setdefault("refit", refit)
    m = M.parse(out)
    files = {e.file: e for e in m.files()}
    listed = {e.file for e in update.shipped} | set(update.reused)
    want = set(files) - {m.base.file}
    if listed != want:
        fail("files", "the shipped and reused files ({}) are not the result's ({})".format(
            ", ".join(sorted(listed)) or "none", ", ".join(sorted(want)) or "none"))  # fmt: skip
    for e in update.shipped:
        if (files[e.file].size, files[e.file].sha256) != (e.size, e.sha256):
            fail("files", "{} differs from the result's entry".format(e.file))
    return out


def new_base(update: Update, layout: PackedLayout, base_onnx: bytes, data: bytes) -> bytes:
    """The new base.onnx: the installed *base_onnx* with its refittable initializers set to its packed
    weights plus the decoded base delta *data* (exact).  Raises :class:`CodecError` or ``ValueError``."""
    raw = codecs.decode(update.base_delta.codec, data, layout.total_nbytes)
    if sha256_bytes(raw) != update.base_delta.raw_sha256:
        raise ValueError("the decoded base delta fails its sha256 check")
    names = [t.name for t in layout.tensors]
    old = layout.pack(read_initializers(base_onnx, names))
    new = layout.apply_exact_delta(old, np.frombuffer(raw, dtype=np.uint8))
    return with_initializers(base_onnx, layout.views(new))


def describe(update: Update) -> str:
    """One line: what the update ships and what it reuses."""
    sent = update.base_delta.size + sum(e.size for e in update.shipped)
    return "update of base {} (release {}): base delta {} bytes ({} tensor(s) changed); ships {}; reuses {}".format(
        update.base_sha256[:12],
        "?" if update.base_release is None else update.base_release,
        update.base_delta.size,
        len(update.changed),
        ", ".join(e.file for e in update.shipped) or "no other file",
        ", ".join(update.reused) or "nothing",
    ) + " ({} bytes of files)".format(sent)


def check_parse(d: dict, shown: str) -> Update:
    """:func:`parse`, its field errors as one :class:`BundleError` naming *shown*."""
    from ..errors import BundleError

    try:
        return parse(d)
    except FieldError as exc:
        raise BundleError(shown, str(exc)) from None


def inspect_update(path: str) -> Optional[List[str]]:
    """``inspect`` of an update bundle folder: every file it ships checked (size, sha256), and what it
    applies to, re-encodes, ships and reuses; None where *path* is no update bundle."""
    import os

    from . import safeio
    from ..errors import BundleError

    mpath = os.path.join(path, M.MANIFEST)
    if not os.path.isdir(path) or not os.path.isfile(mpath):
        return None
    with open(mpath, "rb") as f:
        data = f.read(M.MAX_MANIFEST_BYTES + 1)
    try:
        u = check_parse(loads(data), mpath)
    except M.ManifestError:
        return None
    for e in u.files():
        shown = os.path.join(path, e.file)
        if sha256_bytes(safeio.read_capped(path, e.file, e.size, shown)) != e.sha256:
            raise BundleError(shown, "sha256 mismatch (corrupt file or edited manifest)")
    from .signature import signature_key_id

    b = u.base_delta
    signer = signature_key_id(path)
    return [
        "update      {} (schema {}, toolchain {})".format(path, SCHEMA, ascii(u.raw.get("toolchain_version"))),
        "applies to  base {} (its base.onnx sha256), release {}".format(
            u.base_sha256[:12], "?" if u.base_release is None else u.base_release),
        "re-encoded  base.onnx as an exact delta: {} {} bytes (raw {}), {} tensor(s) changed".format(
            b.codec, b.size, b.raw_size, len(u.changed)),
        "shipped     {}".format(", ".join("{} ({} bytes)".format(e.file, e.size) for e in u.shipped) or "nothing else"),
        "reused      {} (from the installed version)".format(", ".join(u.reused) or "nothing"),
        "signature   {}".format("unsigned" if signer is None else "key " + signer),
        "release     {}".format(u.release),
        "all files verified (sha256)",
    ]  # fmt: skip


def provenance(path: str) -> List[str]:
    """``inspect`` of a bundle an update produced on a device: the version it was applied to and the
    base and updates it runs (nothing for a bundle exported whole)."""
    import os

    try:
        with open(os.path.join(path, FOLDER, APPLIED), "rb") as f:
            applied = json.loads(f.read(1 << 20).decode("utf-8"))
        line = applied["lineage"]
        base, ups = line["base"], line["updates"]
        return ["updated     from version {}; base {} (release {}) + {} update(s): {}".format(
            applied["base_version"], str(base["sha256"])[:12], base["release"], len(ups),
            ", ".join("{} (release {})".format(u["version"], u["release"]) for u in ups))]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return []
