"""The served packed buffer, updated in place at each switch (see :mod:`.weights` for the layout)."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from .sparse_codec import SparseDelta
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
      dense copy of the delta is made).  The int8 region is first rewritten from the base
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
            k = delta.split(n)
            pos, values = delta.positions, delta.values
            if not clean:
                np.copyto(buf[:n], base[:n])
            scatter_add(buf[:n], pos[:k], values[:k])
            fdelta = np.zeros(layout.total_nbytes - n, dtype=np.uint8)
            fdelta[pos[k:] - n] = values[k:]
            f = slice(n, layout.total_nbytes)
            np.add(base[f].view(np.float32), fdelta.view(np.float32), out=buf[f].view(np.float32))
            self.int8_is_base = k == 0
        else:
            layout.apply_delta(base, delta, out=buf)
