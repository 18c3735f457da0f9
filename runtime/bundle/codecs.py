"""Delta codecs.

A delta file holds one packed delta buffer (see :mod:`edgetool.runtime.bundle.weights`),
compressed by one of these codecs:

* ``7z``   - a normal 7-Zip archive (LZMA2) with one member, ``delta.bin`` (py7zr);
* ``zstd`` - one Zstandard frame (zstandard);
* ``sparse`` - positions and values of the changed bytes, zstd-compressed (see
  :mod:`edgetool.runtime.bundle.sparse_codec`); decodes faster than zstd on large
  networks with few changed codes;
* ``raw``  - the packed buffer as is (for measurements).
"""

from __future__ import annotations

import io
from typing import Any, Callable, Dict, Tuple, Union

import numpy as np

from . import sparse_codec
from ..errors import CodecError, UsageError

MEMBER = "delta.bin"


def _7z_encode(raw: bytes, level: int = 9) -> bytes:
    import py7zr

    buf = io.BytesIO()
    filters = [{"id": py7zr.FILTER_LZMA2, "preset": level}]
    with py7zr.SevenZipFile(buf, "w", filters=filters) as archive:
        archive.writef(io.BytesIO(raw), MEMBER)
    return buf.getvalue()


def _7z_decode(data: bytes, size: int) -> bytes:
    import py7zr

    try:
        with py7zr.SevenZipFile(io.BytesIO(data), "r") as archive:
            infos = archive.list()
            names = [i.filename for i in infos]
            if names != [MEMBER]:
                raise CodecError("7z archive must hold exactly one member {!r}, found {}".format(MEMBER, names[:5]))
            declared = infos[0].uncompressed
            if declared != size:
                raise CodecError("7z member declares {} bytes, the layout needs {}".format(declared, size))
            factory = _MemoryFactory(size)
            archive.extract(targets=[MEMBER], factory=factory)
            if factory.data.get(MEMBER) is None:
                raise CodecError("7z member {!r} was not extracted".format(MEMBER))
            return factory.data[MEMBER]
    except CodecError:
        raise
    except Exception as exc:  # py7zr raises many unrelated types for bad input
        raise CodecError("not a valid 7z delta archive ({})".format(str(exc)[:200])) from None


class _MemoryFactory:
    """py7zr WriterFactory that keeps extracted members in memory, refusing more than *cap* bytes."""

    def __init__(self, cap: int):
        self.cap = cap
        self.data: Dict[str, bytes] = {}

    def create(self, filename):
        factory = self

        class _Writer:
            def __init__(self):
                self.buf = io.BytesIO()

            def write(self, b):
                if self.buf.tell() + len(b) > factory.cap:
                    raise CodecError("7z member decodes to more than the {} bytes declared".format(factory.cap))
                self.buf.write(b)
                return len(b)

            def read(self, size=None):
                return b""

            def seek(self, offset, whence=0):
                return self.buf.seek(offset, whence)

            def flush(self):
                pass

            def close(self):
                factory.data[filename] = self.buf.getvalue()

            def size(self):
                return self.buf.tell()

        return _Writer()


def _zstd_encode(raw: bytes, level: int = 19) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)


def _zstd_decode(data: bytes, size: int) -> bytes:
    """One frame, decoded to at most *size* bytes; a frame header claiming another size is refused."""
    import zstandard

    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise CodecError("not a valid zstd delta frame ({})".format(exc)) from None
    declared = params.content_size
    if declared != zstandard.CONTENTSIZE_UNKNOWN and declared != size:
        raise CodecError("zstd frame header declares {} bytes, the layout needs {}".format(declared, size))
    window = 1 << max(20, (max(size, 1) - 1).bit_length())
    if params.window_size > window:
        raise CodecError(
            "zstd frame needs a {}-byte window, more than its {}-byte content".format(params.window_size, size)
        )
    try:
        dctx = zstandard.ZstdDecompressor(max_window_size=window)
        with dctx.stream_reader(io.BytesIO(data), read_across_frames=False) as reader:
            out = reader.read(size + 1)
            if len(out) <= size:
                more = reader.read(1)
                out += more
    except zstandard.ZstdError as exc:
        raise CodecError("not a valid zstd delta frame ({})".format(exc)) from None
    if len(out) > size:
        raise CodecError("zstd frame decodes to more than the {} bytes declared".format(size))
    return out


def _raw(data: bytes, size=None) -> bytes:
    return bytes(data)


CODECS: Dict[str, Tuple[Callable[..., bytes], Callable[[bytes, int], Any]]] = {
    "7z": (_7z_encode, _7z_decode),
    "zstd": (_zstd_encode, _zstd_decode),
    "raw": (_raw, _raw),
    "sparse": (sparse_codec.encode, sparse_codec.decode),
}

EXTENSIONS = {"7z": "7z", "zstd": "zst", "raw": "bin", "sparse": "sps"}


def check_codec(name: str) -> str:
    if name not in CODECS:
        raise UsageError("unknown codec {!r}; choose one of {}".format(name, ", ".join(sorted(CODECS))))
    return name


def encode(name: str, raw: bytes, **kwargs) -> bytes:
    return CODECS[check_codec(name)][0](raw, **kwargs)


def decode(name: str, data: bytes, size: int) -> bytes:
    """Decode *data*, which must decode to exactly *size* bytes; never holds more than size + 1."""
    out = CODECS[check_codec(name)][1](data, size)
    if len(out) != size:
        raise CodecError("decodes to {} bytes, the layout needs {}".format(len(out), size))
    return out


def decode_delta(name: str, data: bytes, size: int) -> Union[np.ndarray, sparse_codec.SparseDelta]:
    """:func:`decode` as a uint8 array, except that a sparse delta stays sparse
    (:class:`~.sparse_codec.SparseDelta`): a switch scatter-adds it without a dense copy."""
    if check_codec(name) == "sparse":
        out = sparse_codec.decode_sparse(data, size)
        if out.size != size:
            raise CodecError("decodes to {} bytes, the layout needs {}".format(out.size, size))
        return out
    return np.frombuffer(decode(name, data, size), dtype=np.uint8)
