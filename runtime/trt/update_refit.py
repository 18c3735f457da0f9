"""Carrying a stored TensorRT engine across an update: a copy of the plan, refitted with the new base
weights and serialized again; no rebuild.

Thin on purpose, and unverified on machines without TensorRT: the weight forms, the refit plan and
the constants TensorRT asks for are the backend's CPU-tested code (:mod:`.weight_forms`,
:mod:`.refit_map`); ``edgetool doctor`` on the device proves the refitted engine against ONNX
Runtime (``deploy --doctor`` runs it after the switch, and rolls back when it fails).  Each entry
records the engine it was refitted from (``refitted_from``).
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

import numpy as np

from ..bundle.onnx_weights import read_initializers
from ..bundle.weights import sha256_bytes
from ..errors import BackendError, DeployError, require
from ..files import slug
from .loader import trt_logger, trt_version
from .refit_map import companions, fixed_weights, missing_report, refit_plan
from .runner import engine_maker
from .weight_forms import host_arrays, weight_form


def refit_copies(work: str, base, entries: Sequence[dict], new_model: bytes, changed: Sequence[str]) -> List[dict]:
    """Each engine of *entries* (stored in the *base* bundle), refitted with the weights of *new_model*
    and written to ``work/engines/``; returns their manifest entries.  One DeployError where an
    engine cannot take the new weights (then a full bundle, and an engine build, are needed)."""
    trt = require("tensorrt")
    require("pycuda.autoinit")
    layout = base.layout
    initializers = read_initializers(new_model)
    packed = layout.pack({t.name: initializers[t.name] for t in layout.tensors})
    os.makedirs(os.path.join(work, "engines"), exist_ok=True)
    out = []
    for e in entries:
        try:
            plan = refit_plan_bytes(trt, base.read_file(e), e, layout, packed, initializers, changed)
        except BackendError as exc:
            raise DeployError("{}: cannot carry the engine across the update ({})".format(e.get("file"), exc)) from None
        digest = sha256_bytes(plan)
        slot = (slug(str(e.get("device_profile", "device"))), slug(str(e.get("precision", "int8"))))
        name = "{}-{}-{}.plan".format(slot[0], slot[1], digest[:12])
        with open(os.path.join(work, "engines", name), "wb") as f:
            f.write(plan)
        out.append(dict(e, file="engines/" + name, size=len(plan), sha256=digest, refitted_from=e.get("sha256")))
    return out


def refit_plan_bytes(
    trt, plan: bytes, entry: dict, layout, packed: np.ndarray, initializers: Dict[str, np.ndarray], changed
) -> bytes:
    """*plan* deserialized, its refittable weights set from *packed* (the tensors *changed*), refitted
    with host weights and serialized again."""
    engine = engine_maker(trt, plan)()
    refitter = trt.Refitter(engine, trt_logger(trt))
    if hasattr(refitter, "weights_validation"):
        refitter.weights_validation = False
    form = weight_form(trt_version(trt), entry.get("precision", "int8"), entry.get("weights"))
    todo = refit_plan(layout, form, refitter.get_all_weights(), recorded=list(changed))
    arrays = host_arrays(layout, packed, form)
    for _, name in todo:
        if not refitter.set_named_weights(name, trt.Weights(arrays[name])):
            raise BackendError("TensorRT rejected the weights {!r}".format(name))
    constants = {**initializers, **fixed_weights(layout, packed, form, todo)}
    extra, _ = companions(list(refitter.get_missing_weights()), constants, [n for _, n in todo])
    for name, arr in extra.items():
        if not refitter.set_named_weights(name, trt.Weights(arr)):
            raise BackendError("TensorRT rejected the constant weights {!r}".format(name))
    missing = list(refitter.get_missing_weights())
    if missing:
        raise BackendError(missing_report(missing, [n for _, n in todo]))
    if not refitter.refit_cuda_engine():
        raise BackendError("TensorRT refit failed")
    return bytes(engine.serialize())
