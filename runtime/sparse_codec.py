"""The ``sparse`` delta codec: positions and values of the changed bytes, each zstd-compressed.

A delta changes few int8 codes when the delta budget is tight; zstd then spends its decode
time on one short sequence per changed byte.  This codec stores the changed bytes instead:

* ``gaps``: for each changed byte, the distance from the previous one (1..255, uint8); a
  longer distance is bridged by filler entries of gap 255 and value 0 (adding 0 changes
  nothing);
* ``values``: the changed bytes themselves.

Decoding is vectorised: positions are a cumulative sum of the gaps, then one scatter.  A
delta with more than ``DENSE_ABOVE`` of its bytes changed is stored as one plain zstd frame
(mode byte 0), where zstd decodes faster than a scatter of that size.

Layout: ``b"EDSP"``, version 1, mode (0 dense, 1 sparse), uint64 total bytes, uint64 entries,
uint64 length of the gaps frame; then the gaps frame and the values frame (sparse mode) or
the one dense frame.  Every size is checked while decoding.
"""

from __future__ import annotations

import struct
from typing import Optional, Union

import numpy as np

from .errors import CodecError

MAGIC = b"EDSP"
HEADER = struct.Struct("<4sBBQQQ")
DENSE_ABOVE = 0.25


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


def decode(data: bytes, size: Optional[int] = None) -> np.ndarray:
    """The packed delta as a uint8 array (bytes-like), every size checked against the header;
    a header declaring another total than *size* is refused before anything is allocated."""
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
    if n and not gaps.all():
        raise CodecError("sparse delta: a zero gap")
    pos = np.cumsum(gaps, dtype=np.int64)
    if n and pos[-1] > total:
        raise CodecError("sparse delta: a position beyond the {} declared bytes".format(total))
    out = np.zeros(total, dtype=np.uint8)
    out[pos - 1] = values
    return out
