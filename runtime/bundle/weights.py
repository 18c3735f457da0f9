"""The refit weight map and the packed delta layout.

Every network in a bundle shares one set of refittable tensors (conv/linear weights as
int8 codes, biases as float32).  They are laid out in one *packed buffer*:

* the int8 region first: every weight tensor (int8 codes) at a 256-byte aligned offset;
* then the float32 region: every per-channel float tensor (conv ``.scale`` and ``.bias``,
  the deployed BatchNorm; fc ``.bias``) at a 256-byte aligned offset.

The same layout serves four purposes, so that the CPU tests cover what the GPU runs:

* a delta file decodes to exactly one packed buffer (uint8 ``(q_sub - q_super) mod 256``
  in the int8 region, float32 ``f_sub - f_super`` in the float region, zero padding);
* the TensorRT backend keeps one device allocation in this layout and registers each
  tensor's pointer (``base + offset``) with the refitter once;
* the CUDA kernel adds a whole packed delta in one launch (bytes wrap, floats add);
* the ONNX Runtime backend binds numpy views of a packed host buffer as graph inputs, and
  :class:`~.packed.PackedWeights` updates that buffer in place at each switch.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from .sparse_codec import SparseDelta


ALIGN = 256
DTYPES = {"int8": np.int8, "float32": np.float32}


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


class TensorSpec:
    """One refittable tensor: its ONNX initializer name, role, dtype, shape and place."""

    __slots__ = ("name", "kind", "dtype", "shape", "offset", "scale", "axis")

    def __init__(self, name, kind, dtype, shape, offset=0, scale=None, axis=0):
        if dtype not in DTYPES:
            raise ValueError("unsupported refit dtype {!r}".format(dtype))
        if kind not in ("weight", "scale", "bias"):
            raise ValueError("unknown tensor kind {!r}".format(kind))
        self.name = str(name)
        self.kind = kind
        self.dtype = dtype
        self.shape = tuple(int(d) for d in shape)
        self.offset = int(offset)
        self.scale = None if scale is None else [float(s) for s in scale]
        self.axis = int(axis)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(DTYPES[self.dtype]).itemsize

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "kind": self.kind,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "offset": self.offset,
            "nbytes": self.nbytes,
        }
        if self.scale is not None:
            d["scale"] = self.scale
            d["axis"] = self.axis
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "TensorSpec":
        spec = cls(d["name"], d["kind"], d["dtype"], d["shape"], d["offset"], d.get("scale"), d.get("axis", 0))
        if "nbytes" in d and int(d["nbytes"]) != spec.nbytes:
            raise ValueError(
                "tensor {}: nbytes {} does not match shape {} and dtype {}".format(
                    spec.name, d["nbytes"], list(spec.shape), spec.dtype
                )
            )
        return spec

    def __repr__(self):
        return "TensorSpec({!r}, {}, {}, {}, @{})".format(self.name, self.kind, self.dtype, self.shape, self.offset)


class PackedLayout:
    """Offsets of every refittable tensor in one packed buffer (see module docstring)."""

    def __init__(self, tensors: Sequence[TensorSpec], int8_nbytes: int, total_nbytes: int):
        self.tensors = list(tensors)
        self.int8_nbytes = int(int8_nbytes)
        self.total_nbytes = int(total_nbytes)
        self.by_name = {t.name: t for t in self.tensors}
        if len(self.by_name) != len(self.tensors):
            raise ValueError("duplicate tensor names in refit layout")
        self._check()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def build(cls, tensors: Iterable[TensorSpec]) -> "PackedLayout":
        """Place tensors: int8 weights first, then float32 biases, each 256-byte aligned."""
        tensors = list(tensors)
        placed: List[TensorSpec] = []
        off = 0
        for t in tensors:
            if t.dtype == "int8":
                t.offset = off
                off = _align(off + t.nbytes)
                placed.append(t)
        int8_nbytes = off
        for t in tensors:
            if t.dtype == "float32":
                t.offset = off
                off = _align(off + t.nbytes)
                placed.append(t)
        return cls(placed, int8_nbytes, off)

    def _check(self):
        end = 0
        for t in sorted(self.tensors, key=lambda t: t.offset):
            if t.offset % ALIGN:
                raise ValueError("tensor {} offset {} is not {}-byte aligned".format(t.name, t.offset, ALIGN))
            if t.offset < end:
                raise ValueError("tensor {} overlaps the previous tensor".format(t.name))
            in_int8 = t.offset + t.nbytes <= self.int8_nbytes
            if (t.dtype == "int8") != in_int8:
                raise ValueError("tensor {} ({}) lies outside its region".format(t.name, t.dtype))
            end = t.offset + t.nbytes
        if end > self.total_nbytes or self.total_nbytes % ALIGN or self.int8_nbytes % ALIGN:
            raise ValueError("packed layout sizes are inconsistent")

    def to_dict(self) -> dict:
        return {
            "align": ALIGN,
            "int8_nbytes": self.int8_nbytes,
            "total_nbytes": self.total_nbytes,
            "tensors": [t.to_dict() for t in self.tensors],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "PackedLayout":
        if int(d.get("align", ALIGN)) != ALIGN:
            raise ValueError("unsupported alignment {}".format(d.get("align")))
        return cls([TensorSpec.from_dict(t) for t in d["tensors"]], d["int8_nbytes"], d["total_nbytes"])

    # -- buffers ----------------------------------------------------------------------------
    def empty(self) -> np.ndarray:
        return np.zeros(self.total_nbytes, dtype=np.uint8)

    def views(self, buf: np.ndarray) -> Dict[str, np.ndarray]:
        """Typed, shaped numpy views (no copies) of every tensor inside *buf*."""
        if buf.dtype != np.uint8 or buf.ndim != 1 or buf.size != self.total_nbytes:
            raise ValueError("packed buffer must be uint8[{}]".format(self.total_nbytes))
        out = {}
        for t in self.tensors:
            out[t.name] = buf[t.offset : t.offset + t.nbytes].view(DTYPES[t.dtype]).reshape(t.shape)
        return out

    def pack(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Pack named arrays (every tensor of the layout, right dtype and shape)."""
        buf = self.empty()
        views = self.views(buf)
        missing = [t.name for t in self.tensors if t.name not in arrays]
        if missing:
            raise KeyError("missing refit tensors: {}".format(", ".join(missing)))
        for t in self.tensors:
            a = np.asarray(arrays[t.name])
            if a.shape != t.shape:
                raise ValueError("tensor {}: shape {} != {}".format(t.name, a.shape, t.shape))
            if a.dtype != DTYPES[t.dtype]:
                raise ValueError("tensor {}: dtype {} != {}".format(t.name, a.dtype, t.dtype))
            views[t.name][...] = a
        return buf

    # -- delta math: int8 codes wrap around mod 256, floats add --------------------------
    def make_delta(self, base: np.ndarray, sub: np.ndarray) -> np.ndarray:
        """delta = (q_sub - q_base) mod 256 in the int8 region, b_sub - b_base in the float region."""
        delta = self.empty()
        n = self.int8_nbytes
        np.subtract(sub[:n], base[:n], out=delta[:n])  # uint8 arithmetic wraps mod 256
        f = slice(n, self.total_nbytes)
        np.subtract(sub[f].view(np.float32), base[f].view(np.float32), out=delta[f].view(np.float32))
        return delta

    def apply_delta(self, base: np.ndarray, delta: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """out = base + delta: int8 codes wrap around (bit-exact), biases add in float32."""
        if isinstance(delta, SparseDelta):
            delta = delta.dense()
        if delta.dtype != np.uint8 or delta.size != self.total_nbytes:
            raise ValueError("delta must be uint8[{}], got {}[{}]".format(self.total_nbytes, delta.dtype, delta.size))
        if out is None:
            out = self.empty()
        n = self.int8_nbytes
        np.add(base[:n], delta[:n], out=out[:n])
        f = slice(n, self.total_nbytes)
        np.add(base[f].view(np.float32), delta[f].view(np.float32), out=out[f].view(np.float32))
        return out

    # -- exact deltas (updates): the float region as uint32 bit patterns, so base + delta is bit-exact --
    def make_exact_delta(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """(new - old) mod 256 in the int8 region (as :meth:`make_delta`) and the float32 tensors' bit
        patterns subtracted as uint32, mod 2**32: :meth:`apply_exact_delta` gives back *new* byte for byte."""
        delta = self.empty()
        n = self.int8_nbytes
        np.subtract(new[:n], old[:n], out=delta[:n])
        f = slice(n, self.total_nbytes)
        np.subtract(new[f].view(np.uint32), old[f].view(np.uint32), out=delta[f].view(np.uint32))
        return delta

    def apply_exact_delta(self, old: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """old + delta with every byte exact (the inverse of :meth:`make_exact_delta`)."""
        if delta.dtype != np.uint8 or delta.size != self.total_nbytes:
            raise ValueError("delta must be uint8[{}], got {}[{}]".format(self.total_nbytes, delta.dtype, delta.size))
        out = self.empty()
        n = self.int8_nbytes
        np.add(old[:n], delta[:n], out=out[:n])
        f = slice(n, self.total_nbytes)
        np.add(old[f].view(np.uint32), delta[f].view(np.uint32), out=out[f].view(np.uint32))
        return out

    def dequantize(self, buf: np.ndarray) -> Dict[str, np.ndarray]:
        """Float32 weights (codes x per-channel scale) and biases, for fp16-only devices."""
        out = {}
        for name, v in self.views(buf).items():
            t = self.by_name[name]
            if t.dtype == "int8":
                scale = np.asarray(t.scale, dtype=np.float32)
                shape = [1] * len(t.shape)
                shape[t.axis] = -1
                out[name] = v.astype(np.float32) * scale.reshape(shape)
            else:
                out[name] = v.astype(np.float32)
        return out

    def changed_tensors(self, deltas: Iterable[np.ndarray]) -> List[str]:
        """Names of tensors that differ from the base in at least one delta."""
        changed = set()
        for d in deltas:
            for t in self.tensors:
                if d[t.offset : t.offset + t.nbytes].any():
                    changed.add(t.name)
        return [t.name for t in self.tensors if t.name in changed]


def sha256_bytes(data) -> str:
    return hashlib.sha256(data).hexdigest()
