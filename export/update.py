"""Update bundles (``edgetool export RUN --update-of BUNDLE``): the full bundle of the new weights,
written by :func:`.bundle.write_bundle`, turned into an exact delta against the deployed bundle's
base plus the files whose bytes changed (the format: :mod:`edgetool.runtime.bundle.update`).

Refused, naming why, when the two cannot share an engine: another graph (refit tensors, head,
input), other weight or activation scales, or a base.onnx that differs outside its refittable
weights.  Then only a full bundle will do.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import List, Optional, Tuple

import numpy as np

from edgetool import __version__
from edgetool.runtime.bundle import codecs
from edgetool.runtime.bundle import update as U
from edgetool.runtime.bundle.names import FieldError
from edgetool.runtime.bundle.onnx_weights import read_initializers, with_initializers
from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.bundle.weights import sha256_bytes
from edgetool.runtime.errors import UsageError
from edgetool.runtime.files import write_json_atomic

from .atomic import fault_point, staged_dir


def why_not(old: Bundle, new: Bundle) -> Optional[str]:
    """Why *new* cannot ship as an update of *old* (None: it can), in words naming the difference."""
    a, b = old.layout, new.layout
    shape_a = [(t.name, t.dtype, t.shape, t.offset) for t in a.tensors]
    shape_b = [(t.name, t.dtype, t.shape, t.offset) for t in b.tensors]
    if shape_a != shape_b or (a.int8_nbytes, a.total_nbytes) != (b.int8_nbytes, b.total_nbytes):
        diff = [x for x, y in zip(shape_b, shape_a) if x != y] or shape_b[len(shape_a) :] or shape_a[len(shape_b) :]
        first = "{} {} {}".format(diff[0][0], diff[0][1], list(diff[0][2])) if diff else "the layout's sizes"
        return "the graph differs (refit tensors: {}, first difference {})".format(len(shape_b), first)
    for ta, tb in zip(a.tensors, b.tensors):
        if ta.scale != tb.scale:
            return "the weight scales of {} differ (the scales were not frozen)".format(ta.name)
    qa = old.manifest.get("quantization", {}).get("activation_scales", {})
    qb = new.manifest.get("quantization", {}).get("activation_scales", {})
    if qa != qb:
        names = sorted(k for k in set(qa) | set(qb) if qa.get(k) != qb.get(k))
        return "the activation scales of {} differ (the scales were not frozen)".format(", ".join(names[:3]))
    if old.input != new.input or old.head_width != new.head_width:
        return "the input or the head differs"
    return None


def _packed(bundle: Bundle, model: bytes) -> np.ndarray:
    layout = bundle.layout
    return layout.pack(read_initializers(model, [t.name for t in layout.tensors]))


def _split_files(old: Bundle, new: Bundle) -> Tuple[List[dict], List[str]]:
    """(files to ship, files the device reuses): a file of the result is reused where the installed
    bundle holds the same path with the same sha256."""
    have = {f.file: f.sha256 for f in old.model.files()}
    ship, reuse = [], []
    for f in new.model.files():
        if f is new.model.base:
            continue
        if have.get(f.file) == f.sha256:
            reuse.append(f.file)
        else:
            ship.append({"file": f.file, "size": f.size, "sha256": f.sha256})
    return ship, reuse


def write_update(full_dir: str, deployed: str, out: str, codec: str = "zstd", force: bool = False) -> dict:
    """Write the update bundle *out* that turns *deployed* into the full bundle *full_dir*; return its manifest."""
    codecs.check_codec(codec)
    with Bundle.open(deployed) as old, Bundle.open(full_dir) as new:
        why = why_not(old, new)
        old_model, new_model = old.base_onnx(), new.base_onnx()
        layout = new.layout
        if why is None:
            p_old, p_new = _packed(old, old_model), _packed(new, new_model)
            if with_initializers(old_model, layout.views(p_new)) != new_model:
                why = "base.onnx differs outside its refittable weights (the graph or a constant changed)"
        if why is not None:
            raise UsageError(
                "{}: the new network cannot ship as an update of {}: {}; a full bundle is needed "
                "(export without --update-of)".format(out, deployed, why)
            )
        if new.model.release < old.model.release:
            raise UsageError(
                "--release {} is lower than the deployed bundle's {}: every device that runs it would refuse "
                "the update".format(new.model.release, old.model.release)
            )
        raw = layout.make_exact_delta(p_old, p_new)
        data = codecs.encode(codec, raw.tobytes())
        manifest = _manifest(old, new, raw, data, codec)
        rel, ship = manifest["base_delta"]["file"], manifest["files"]
        try:  # the device's own checks, before anything is published
            U.result_manifest(U.parse(manifest), old.manifest)
        except FieldError as exc:
            raise UsageError("cannot write a valid update: {}".format(exc)) from None
        with staged_dir(out, force) as tmp:
            os.makedirs(os.path.join(tmp, U.FOLDER))
            with open(os.path.join(tmp, rel), "wb") as f:
                f.write(data)
            for e in ship:
                os.makedirs(os.path.dirname(os.path.join(tmp, e["file"])), exist_ok=True)
                shutil.copyfile(os.path.join(new.root, e["file"]), os.path.join(tmp, e["file"]))
                fault_point("export:file")
            write_json_atomic(os.path.join(tmp, "manifest.json"), manifest)
            fault_point("export:after-manifest")
    return manifest


def _manifest(old: Bundle, new: Bundle, raw: np.ndarray, data: bytes, codec: str) -> dict:
    """The update manifest: what it applies to, the base delta, the files shipped and reused, the result."""
    layout = new.layout
    ship, reuse = _split_files(old, new)
    result = {k: v for k, v in new.manifest.items() if k != "refit"}
    result["refit"] = {"changed": list(new.manifest["refit"].get("changed", []))}
    return {
        "schema": U.SCHEMA,
        "toolchain_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "release": new.model.release,
        "applies_to": {
            "base_sha256": old.model.base.sha256,
            "refit_sha256": U.refit_sha256(old.manifest["refit"]),
            "release": old.model.release,
        },
        "base_delta": {
            "file": "{}/base.{}".format(U.FOLDER, codecs.EXTENSIONS[codec]),
            "codec": codec,
            "raw_size": int(raw.size),
            "size": len(data),
            "sha256": sha256_bytes(data),
            "raw_sha256": sha256_bytes(raw.tobytes()),
            "changed": layout.changed_tensors([raw]),
            "changed_int8": int(np.count_nonzero(raw[: layout.int8_nbytes])),
        },
        "files": ship,
        "reused": reuse,
        "result": result,
    }
