"""The refit weight map: which engine weights a switch writes, where, and as what.

Shared by the TensorRT backend (GPU) and the CPU tests: every refittable tensor of the
packed layout maps to the ONNX initializer of the same name (TensorRT's ONNX parser names
refittable weights after their initializers), with its dtype, element count, shape and
byte offset inside the packed device buffer.
"""
from __future__ import annotations

from typing import List, Mapping, Sequence, Union

import numpy as np

from .errors import BundleError
from .onnx_weights import read_initializers
from .weights import DTYPES, PackedLayout


class RefitEntry:
    __slots__ = ("name", "dtype", "shape", "count", "offset", "nbytes")

    def __init__(self, name, dtype, shape, count, offset, nbytes):
        self.name, self.dtype, self.shape = name, dtype, tuple(shape)
        self.count, self.offset, self.nbytes = count, offset, nbytes

    def __repr__(self):
        return "RefitEntry({!r}, {}, {}, @{})".format(self.name, self.dtype, self.shape, self.offset)


def build_refit_map(layout: PackedLayout, model: Union[bytes, Mapping[str, np.ndarray]],
                    source: str = "base.onnx") -> List[RefitEntry]:
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
            raise BundleError(source, "refit tensor {!r} is {} in the model, {} in the manifest".format(
                t.name, a.dtype, t.dtype))
        if tuple(a.shape) != t.shape:
            raise BundleError(source, "refit tensor {!r} has shape {} in the model, {} in the manifest".format(
                t.name, list(a.shape), list(t.shape)))
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
