"""Delta codecs.

A delta file holds one packed delta buffer (see :mod:`edgetool.runtime.weights`),
compressed by one of these codecs:

* ``7z``   - a normal 7-Zip archive (LZMA2) with one member, ``delta.bin`` (py7zr);
* ``zstd`` - one Zstandard frame (zstandard);
* ``sparse`` - positions and values of the changed bytes, zstd-compressed (see
  :mod:`edgetool.runtime.sparse_codec`); decodes faster than zstd on large
  networks with few changed codes;
* ``raw``  - the packed buffer as is (for measurements).
"""
from __future__ import annotations

import io
from typing import Any, Callable, Dict, Tuple

from . import sparse_codec
from .errors import CodecError, UsageError

MEMBER = "delta.bin"


def _7z_encode(raw: bytes, level: int = 9) -> bytes:
    import py7zr

    buf = io.BytesIO()
    filters = [{"id": py7zr.FILTER_LZMA2, "preset": level}]
    with py7zr.SevenZipFile(buf, "w", filters=filters) as archive:
        archive.writef(io.BytesIO(raw), MEMBER)
    return buf.getvalue()


def _7z_decode(data: bytes) -> bytes:
    import py7zr

    try:
        with py7zr.SevenZipFile(io.BytesIO(data), "r") as archive:
            names = archive.getnames()
            if names != [MEMBER]:
                raise CodecError("7z archive must hold exactly one member {!r}, found {}".format(MEMBER, names))
            if hasattr(archive, "readall"):
                return archive.readall()[MEMBER].read()
            # py7zr >= 1.0 removed readall(); extract through a factory into memory.
            factory = _MemoryFactory()
            archive.extract(targets=[MEMBER], factory=factory)
            return factory.data[MEMBER]
    except CodecError:
        raise
    except Exception as exc:  # py7zr raises many unrelated types for bad input
        raise CodecError("not a valid 7z delta archive ({})".format(exc)) from None


class _MemoryFactory:
    """py7zr WriterFactory that keeps extracted members in memory."""

    def __init__(self):
        self.data = {}

    def create(self, filename):
        factory = self

        class _Writer:
            def __init__(self):
                self.buf = io.BytesIO()

            def write(self, b):
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


def _zstd_decode(data: bytes) -> bytes:
    import zstandard

    try:
        return zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise CodecError("not a valid zstd delta frame ({})".format(exc)) from None


def _raw(data: bytes) -> bytes:
    return bytes(data)


CODECS: Dict[str, Tuple[Callable[..., bytes], Callable[[bytes], Any]]] = {
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


def decode(name: str, data: bytes) -> bytes:
    return CODECS[check_codec(name)][1](data)
