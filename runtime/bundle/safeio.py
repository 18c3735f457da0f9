"""Bounded reads of bundle files: regular files inside the bundle root, never more than declared.

Each path component is opened relative to the previous one with ``O_NOFOLLOW``, so a
symbolic link anywhere below the root (``deltas/`` itself, or one file) is refused rather
than followed; the file is opened ``O_NONBLOCK`` so that a FIFO cannot hang the reader,
and it must be a regular file.  A read takes at most the declared size + 1 bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Tuple

from ..errors import BundleError

_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
REFUSED = "only regular files inside the bundle are read"


def open_inside(root: str, rel: str, shown: str) -> int:
    """A read-only fd of the regular file *rel* under *root*; BundleError otherwise."""
    parts = rel.split("/")
    if os.path.isabs(rel) or any(p in ("", ".", "..") for p in parts):
        raise BundleError(shown, "file path escapes the bundle")
    try:
        dfd = os.open(root, _DIR)
    except OSError as exc:
        raise BundleError(shown, "cannot open the bundle folder ({})".format(exc.strerror)) from None
    try:
        for p in parts[:-1]:
            nfd = _open_at(p, _DIR | _NOFOLLOW, dfd, shown, "folder " + p)
            os.close(dfd)
            dfd = nfd
        fd = _open_at(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK | getattr(os, "O_CLOEXEC", 0), dfd, shown, "file")
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BundleError(shown, "not a regular file (refused: {})".format(REFUSED))
    return fd


def _open_at(name: str, flags: int, dfd: int, shown: str, what: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dfd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise BundleError(shown, "missing (listed in the manifest)") from None
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise BundleError(
                shown, "{} is a symbolic link or not a folder (refused: {})".format(what, REFUSED)
            ) from None
        raise BundleError(shown, "cannot open ({})".format(exc.strerror)) from None


def read_capped(root: str, rel: str, size: int, shown: str) -> bytes:
    """The bytes of *rel*, which must be exactly *size* bytes; reads at most size + 1 bytes."""
    return read_capped_keyed(root, rel, size, shown)[0]


def stat_key(st: os.stat_result) -> Tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_capped_keyed(root: str, rel: str, size: int, shown: str) -> Tuple[bytes, tuple, bool]:
    """(data, key, same): :func:`read_capped`, with the file's stat key taken on the open
    descriptor before the read, and whether it was unchanged after it."""
    fd = open_inside(root, rel, shown)
    try:
        st = os.fstat(fd)
        key = stat_key(st)
        if st.st_size != size:
            raise BundleError(
                shown, "size {} bytes, manifest says {} (truncated or replaced?)".format(st.st_size, size)
            )
        chunks = []
        got = 0
        while got <= size:
            b = os.read(fd, min(size + 1 - got, 1 << 20))
            if not b:
                break
            chunks.append(b)
            got += len(b)
        same = stat_key(os.fstat(fd)) == key
    except OSError as exc:
        raise BundleError(shown, "cannot read ({})".format(exc.strerror)) from None
    finally:
        os.close(fd)
    if got != size:
        raise BundleError(shown, "read {} bytes, manifest says {} (changed while reading?)".format(got, size))
    return b"".join(chunks), key, same
