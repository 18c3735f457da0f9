"""The refit weight map: which engine weights a switch writes, where, and as what.

Shared by the TensorRT backend (GPU) and the CPU tests: every refittable tensor of the
packed layout maps to the ONNX initializer of the same name (TensorRT's ONNX parser names
refittable weights after their initializers), with its dtype, element count, shape and
byte offset inside the packed device buffer.  :func:`refit_plan` says which of them a
switch hands to the refitter, :func:`companions` which constants TensorRT also asks for.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import BackendError, BundleError
from ..bundle.onnx_weights import read_initializers
from ..bundle.weights import DTYPES, PackedLayout
from .weight_forms import engine_name, host_arrays


class RefitEntry:
    __slots__ = ("name", "dtype", "shape", "count", "offset", "nbytes")

    def __init__(self, name, dtype, shape, count, offset, nbytes):
        self.name, self.dtype, self.shape = name, dtype, tuple(shape)
        self.count, self.offset, self.nbytes = count, offset, nbytes

    def __repr__(self):
        return "RefitEntry({!r}, {}, {}, @{})".format(self.name, self.dtype, self.shape, self.offset)


def build_refit_map(
    layout: PackedLayout, model: Union[bytes, Mapping[str, np.ndarray]], source: str = "base.onnx"
) -> List[RefitEntry]:
    """Check the layout against the model's initializers and return the refit entries.

    *model* is the serialized ONNX model or its already-read initializers.

    Raises :class:`BundleError` naming *source* when a tensor is missing from the model or
    its dtype or shape disagrees with the manifest.
    """
    inits = read_initializers(model) if isinstance(model, (bytes, bytearray)) else model
    entries = []
    for t in layout.tensors:
        if t.name not in inits:
            raise BundleError(source, "refit tensor {!r} is not an initializer of the model".format(t.name))
        a = inits[t.name]
        if a.dtype != np.dtype(DTYPES[t.dtype]):
            raise BundleError(
                source, "refit tensor {!r} is {} in the model, {} in the manifest".format(t.name, a.dtype, t.dtype)
            )
        if tuple(a.shape) != t.shape:
            raise BundleError(
                source,
                "refit tensor {!r} has shape {} in the model, {} in the manifest".format(
                    t.name, list(a.shape), list(t.shape)
                ),
            )
        entries.append(RefitEntry(t.name, t.dtype, t.shape, t.numel, t.offset, t.nbytes))
    return entries


def trt_dtype(trt, dtype: str):
    return {"int8": trt.int8, "float32": trt.float32, "float16": trt.float16}[dtype]


def missing_report(missing: Sequence[str], known: Sequence[str]) -> str:
    """One line for ``get_missing_weights`` results."""
    unknown = [m for m in missing if m not in set(known)]
    msg = "TensorRT engine still misses {} refit weight(s): {}".format(len(missing), ", ".join(list(missing)[:6]))
    if unknown:
        msg += " (not in the bundle's refit map: was the engine built from another model?)"
    return msg


def refit_plan(
    layout,
    form: str,
    refittable: Iterable[str],
    changed: Optional[Callable[[], Iterable[str]]] = None,
    recorded: Optional[Sequence[str]] = None,
) -> List:
    """The packed tensors a switch must hand to the refitter, as ``(spec, engine name)``.

    *refittable* is what the engine reports (``Refitter.get_all_weights``).  *recorded* is the
    manifest's ``refit.changed``: where given, the plan is exactly those tensors, however many more
    the engine could refit (every other tensor holds the base values in every network).  Without
    it, every refittable tensor is in the plan; *changed* returns the tensors some delta changes,
    and is called only when the engine leaves some tensors out (``REFIT_INDIVIDUAL``); ``None``
    means every tensor may change.  A tensor that a delta changes but the engine cannot refit
    would silently keep the base weights, so it is an error naming the tensors.
    """
    refittable = set(refittable)
    plan = [(spec, engine_name(spec, form)) for spec in layout.tensors]
    if recorded is not None:
        keep = set(recorded)
        plan = [(spec, name) for spec, name in plan if spec.name in keep]
        _refuse_frozen([name for _, name in plan if name not in refittable])
        return plan
    fixed = [(spec, name) for spec, name in plan if name not in refittable]
    if not fixed:
        return plan
    wanted = None if changed is None else set(changed())
    _refuse_frozen([name for spec, name in fixed if wanted is None or spec.name in wanted])
    return [(spec, name) for spec, name in plan if name in refittable]


def _refuse_frozen(frozen: Sequence[str]) -> None:
    if frozen:
        raise BackendError(
            "the engine cannot refit {} tensor(s) the deltas change: {}{} (rebuild it with "
            "edgetool engine build, or --refit-all)".format(
                len(frozen), ", ".join(frozen[:6]), ", ..." if len(frozen) > 6 else ""
            )
        )


def fixed_weights(layout, base: np.ndarray, form: str, plan: Sequence) -> Dict[str, np.ndarray]:
    """Engine name -> base value of every packed tensor outside *plan* (what a switch never hands over).

    No delta changes them, so where TensorRT asks for one (fused with a tensor a switch refits,
    ``get_missing_weights``), its base value is the right one in every network."""
    handed = {name for _, name in plan}
    return {n: np.ascontiguousarray(a) for n, a in host_arrays(layout, base, form).items() if n not in handed}


def companions(
    missing: Sequence[str], initializers: Mapping[str, np.ndarray], known: Iterable[str]
) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """Split ``get_missing_weights`` into constants we can supply unchanged and unknown names.

    TensorRT may ask for weights fused with the ones a switch writes (for example the
    Q/DQ scales of a quantized convolution).  They never change between networks, so the
    model's own initializer values are the right answer.  Names the refit map already
    covers are not companions: if TensorRT still misses them, something else is wrong.
    """
    known = set(known)
    supply, unknown = {}, []
    for name in missing:
        if name not in known and name in initializers:
            supply[name] = np.ascontiguousarray(initializers[name])
        else:
            unknown.append(name)
    return supply, unknown
