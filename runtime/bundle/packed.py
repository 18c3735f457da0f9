"""The served packed buffer, updated in place at each switch (see :mod:`.weights` for the layout)."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from .sparse_codec import CHUNK, SparseDelta
from .weights import PackedLayout

# numpy >= 1.25 runs ufunc.at through a fast loop (one pass: read, add, write back); before
# that it was ~50x slower than a gather, add and scatter, which unique positions allow too.
_ADD_AT_FAST = tuple(int(p) for p in np.__version__.split(".")[:2]) >= (1, 25)


def scatter_add(region: np.ndarray, positions: np.ndarray, values: np.ndarray) -> None:
    """``region[positions] += values`` in place, uint8 wrapping mod 256 (bit-exact int8 codes).

    *positions* must be strictly increasing (a :class:`SparseDelta`'s are, by construction);
    any position outside *region* is refused before anything is written."""
    if region.dtype != np.uint8 or values.dtype != np.uint8 or positions.shape != values.shape:
        raise ValueError("scatter_add needs a uint8 region and as many uint8 values as positions")
    if positions.size and (positions[0] < 0 or positions[-1] >= region.size):
        raise ValueError(
            "delta positions {}..{} lie outside the {}-byte region".format(
                int(positions[0]), int(positions[-1]), region.size
            )
        )
    if _ADD_AT_FAST:
        np.add.at(region, positions, values)
    else:
        region[positions] += values


Delta = Union[np.ndarray, SparseDelta]


class PackedWeights:
    """The packed host buffer a backend serves from: the base, or base + one delta, in place.

    * a :class:`SparseDelta`: its int8 entries are scatter-added into the int8 region (no
      dense copy of the delta is made), their positions derived a chunk at a time into one
      buffer that lives as long as this object (at most 2 MiB), so a switch allocates nothing in
      proportion to the delta.  The int8 region is first rewritten from the base
      only when it does not hold the base already, so a switch from the base network (the
      one-engine pattern) writes the changed codes and nothing else.  The few entries in the
      float region become a small float delta added like a dense one: both forms give the
      same bits;
    * a dense delta: ``buf = base + delta`` over the whole buffer;
    * ``None`` (the base): the int8 region is copied back only when something else is in it.

    ``int8_is_base`` is cleared before any write and set only once a write has completed, so
    a failure part-way leaves the buffer marked unknown and the next :meth:`set` rewrites it
    whole.  Whoever writes :attr:`buf` by other means calls :meth:`invalidate`.
    """

    def __init__(self, layout: PackedLayout, base: np.ndarray, buf: Optional[np.ndarray] = None):
        if base.dtype != np.uint8 or base.shape != (layout.total_nbytes,):
            raise ValueError("base buffer must be uint8[{}]".format(layout.total_nbytes))
        self.layout, self.base = layout, base
        if buf is None:
            buf = base.copy()
        else:
            np.copyto(buf, base)
        self.buf = buf
        self.int8_is_base = True
        self._chunk: Optional[np.ndarray] = None  # positions of one chunk of a sparse delta, reused

    def invalidate(self) -> None:
        self.int8_is_base = False

    def set(self, delta: Optional[Delta]) -> None:
        layout, base, buf = self.layout, self.base, self.buf
        n = layout.int8_nbytes
        clean, self.int8_is_base = self.int8_is_base, False
        if delta is None:
            if not clean:
                np.copyto(buf[:n], base[:n])
            np.copyto(buf[n:], base[n:])
            self.int8_is_base = True
        elif isinstance(delta, SparseDelta):
            if delta.total != layout.total_nbytes:
                raise ValueError("sparse delta of {} bytes, the layout has {}".format(delta.total, layout.total_nbytes))
            if not clean:
                np.copyto(buf[:n], base[:n])
            want = min(CHUNK, max(1, delta.gaps.size))
            if self._chunk is None or self._chunk.size < want:
                self._chunk = np.empty(want, dtype=np.int64)
            region, in_int8 = buf[:n], 0
            fdelta = np.zeros(layout.total_nbytes - n, dtype=np.uint8)
            for pos, values in delta.chunks(self._chunk):
                k = pos.size if pos[-1] < n else int(np.searchsorted(pos, n))
                if k:
                    scatter_add(region, pos[:k], values[:k])
                    in_int8 += k
                if k < pos.size:  # the float region's few entries become a dense float delta
                    fdelta[pos[k:] - n] = values[k:]
            f = slice(n, layout.total_nbytes)
            np.add(base[f].view(np.float32), fdelta.view(np.float32), out=buf[f].view(np.float32))
            self.int8_is_base = in_int8 == 0
        else:
            layout.apply_delta(base, delta, out=buf)
