"""The ``sparse`` delta codec: positions and values of the changed bytes, each zstd-compressed.

A delta changes few int8 codes when the delta budget is tight; zstd then spends its decode
time on one short sequence per changed byte.  This codec stores the changed bytes instead:

* ``gaps``: for each changed byte, the distance from the previous one (1..255, uint8); a
  longer distance is bridged by filler entries of gap 255 and value 0 (adding 0 changes
  nothing);
* ``values``: the changed bytes themselves.

Decoding is vectorised: positions are a cumulative sum of the gaps.  :func:`decode_sparse`
keeps the delta in that form (:class:`SparseDelta`), so that a switch scatter-adds the changed
bytes into the weights in place (:class:`edgetool.runtime.bundle.packed.PackedWeights`) instead of
expanding the delta to a dense buffer first, deriving the positions a chunk at a time into
one reused buffer; :func:`decode` expands it.  A
delta with more than ``DENSE_ABOVE`` of its bytes changed is stored as one plain zstd frame
(mode byte 0), where zstd decodes faster than a scatter of that size.

Layout: ``b"EDSP"``, version 1, mode (0 dense, 1 sparse), uint64 total bytes, uint64 entries,
uint64 length of the gaps frame; then the gaps frame and the values frame (sparse mode) or
the one dense frame.  Every size is checked while decoding.
"""

from __future__ import annotations

import struct
from typing import Iterator, Optional, Tuple, Union

import numpy as np

from ..errors import CodecError

MAGIC = b"EDSP"
HEADER = struct.Struct("<4sBBQQQ")
DENSE_ABOVE = 0.25
# Entries per chunk of derived positions (int64: 2 MiB): large enough that the per-chunk
# overhead is lost in the work, small enough not to matter beside the weights.
CHUNK = 1 << 18


def encode(raw: bytes, level: int = 19) -> bytes:
    import zstandard

    a = np.frombuffer(raw, dtype=np.uint8)
    zc = zstandard.ZstdCompressor(level=level, write_content_size=True)
    pos = np.flatnonzero(a)
    if pos.size > DENSE_ABOVE * max(1, a.size):
        return HEADER.pack(MAGIC, 1, 0, a.size, 0, 0) + zc.compress(bytes(raw))
    gaps = np.diff(np.concatenate([[-1], pos]))
    fillers = (gaps - 1) // 255
    at = np.arange(pos.size) + np.cumsum(fillers)  # where each real entry lands after its fillers
    n = int(pos.size + fillers.sum())
    g = np.full(n, 255, dtype=np.uint8)
    v = np.zeros(n, dtype=np.uint8)
    g[at] = (gaps - 255 * fillers).astype(np.uint8)
    v[at] = a[pos]
    gz, vz = zc.compress(g.tobytes()), zc.compress(v.tobytes())
    return HEADER.pack(MAGIC, 1, 1, a.size, n, len(gz)) + gz + vz


def _frame(data: Union[bytes, memoryview], size: int, what: str) -> np.ndarray:
    import zstandard

    try:
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise CodecError("sparse delta: bad {} frame ({})".format(what, exc)) from None
    if len(out) != size:
        raise CodecError("sparse delta: {} frame holds {} bytes, header says {}".format(what, len(out), size))
    return np.frombuffer(out, dtype=np.uint8)


class SparseDelta:
    """A decoded sparse delta: *values[i]* is added (uint8, wrapping) at byte *positions[i]*.

    Built from the codec's gaps, so the positions are strictly increasing by construction
    (every gap is 1..255, checked) and lie inside *total* bytes (the sum of the gaps is
    checked) before the object exists: a scatter with them can neither repeat nor leave the
    buffer.  Only the gaps and values are held (1 byte each per entry).  A switch never builds
    the whole positions array (8 bytes per entry, 9 MB for a ResNet-18 delta at 10%):
    :meth:`chunks` derives them :data:`CHUNK` entries at a time into one reused buffer, the
    running position carried from chunk to chunk.
    """

    __slots__ = ("total", "gaps", "values")

    def __init__(self, total: int, gaps: np.ndarray, values: np.ndarray):
        gaps, values = np.asarray(gaps), np.asarray(values)
        if gaps.dtype != np.uint8 or values.dtype != np.uint8 or gaps.ndim != 1 or gaps.shape != values.shape:
            raise CodecError("sparse delta: gaps and values must be two uint8 vectors of one length")
        if gaps.size and not gaps.all():
            raise CodecError("sparse delta: a zero gap (a position given twice)")
        if gap_sum(gaps) > int(total):  # the last position is the sum of the gaps, minus one
            raise CodecError("sparse delta: a position beyond the {} declared bytes".format(int(total)))
        self.total, self.gaps, self.values = int(total), gaps, values

    def chunks(self, buf: Optional[np.ndarray] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """(positions, values) of consecutive runs of entries, in order.

        The positions (int64, the index type numpy's scatter takes without a conversion) are
        written into *buf* (int64, reused from chunk to chunk: use each chunk before asking
        for the next), or into one buffer of :data:`CHUNK` entries made here."""
        if buf is None:
            buf = np.empty(min(CHUNK, max(1, self.gaps.size)), dtype=np.int64)
        elif buf.dtype != np.int64 or buf.ndim != 1 or not buf.size:
            raise ValueError("chunk buffer must be a non-empty int64 vector")
        gaps, values, step = self.gaps, self.values, buf.size
        carry = -1  # positions are the running sum of the gaps, minus one
        for start in range(0, gaps.size, step):
            end = min(gaps.size, start + step)
            pos = buf[: end - start]
            pos[...] = gaps[start:end]  # widen, then sum in place (cumsum with a dtype cast is 8x slower)
            pos[0] += carry
            np.cumsum(pos, out=pos)
            carry = int(pos[-1])
            yield pos, values[start:end]

    @property
    def positions(self) -> np.ndarray:
        """All byte positions (int64, strictly increasing, each < total), as a new array."""
        out = np.empty(self.gaps.size, dtype=np.int64)
        if out.size:
            for _ in self.chunks(out):  # one chunk: the buffer holds them all
                pass
        return out

    @property
    def size(self) -> int:
        return self.total

    @property
    def nbytes(self) -> int:
        """Bytes held: the gaps and the values."""
        return self.gaps.nbytes + self.values.nbytes

    def split(self, at: int) -> int:
        """How many entries lie before byte *at* (positions are sorted)."""
        count = 0
        for pos, _ in self.chunks():
            if pos[-1] >= at:
                return count + int(np.searchsorted(pos, at))
            count += pos.size
        return count

    def dense(self, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The delta as a packed uint8 buffer (into *out*, when given, which is overwritten)."""
        if out is None:
            out = np.zeros(self.total, dtype=np.uint8)
        elif out.dtype != np.uint8 or out.shape != (self.total,):
            raise ValueError("dense sparse delta needs uint8[{}], got {}{}".format(self.total, out.dtype, out.shape))
        else:
            out.fill(0)
        for pos, values in self.chunks():
            out[pos] = values
        return out


def gap_sum(gaps: np.ndarray) -> int:
    """The sum of uint8 *gaps*, exact: uint32 sums of at most 2**24 entries (< 255 * 2**24 < 2**32),
    twice as fast as one uint64 sum."""
    step = 1 << 24
    return sum(int(gaps[i : i + step].sum(dtype=np.uint32)) for i in range(0, gaps.size, step))


def decode(data: bytes, size: Optional[int] = None) -> np.ndarray:
    """The packed delta as a uint8 array (bytes-like), every size checked against the header;
    a header declaring another total than *size* is refused before anything is allocated."""
    out = decode_sparse(data, size)
    return out.dense() if isinstance(out, SparseDelta) else out


def decode_sparse(data: bytes, size: Optional[int] = None) -> Union[SparseDelta, np.ndarray]:
    """:func:`decode` without the expansion: a :class:`SparseDelta` (sparse mode) or the
    dense uint8 array (a delta stored as one zstd frame)."""
    if len(data) < HEADER.size:
        raise CodecError("sparse delta: {} bytes, shorter than its header".format(len(data)))
    magic, version, mode, total, n, glen = HEADER.unpack_from(data)
    if magic != MAGIC or version != 1 or mode not in (0, 1):
        raise CodecError("not a sparse delta (magic {!r}, version {}, mode {})".format(magic, version, mode))
    if size is not None and total != size:
        raise CodecError("sparse delta: header declares {} bytes, the layout needs {}".format(total, size))
    body = memoryview(data)[HEADER.size :]
    if mode == 0:
        return _frame(body, total, "dense")
    if n > total or glen > len(body):
        raise CodecError("sparse delta: header sizes are inconsistent")
    gaps, values = _frame(body[:glen], n, "gaps"), _frame(body[glen:], n, "values")
    return SparseDelta(total, gaps, values)
