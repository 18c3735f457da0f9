"""Small filesystem helpers: atomic writes, an atomic symlink switch, and an exclusive lock."""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Optional, cast

from ..errors import DeployError
from ..files import fsync_dir, write_json_atomic


def atomic_json(path: str, obj) -> None:
    """A device's state or config file: sorted keys, so a change shows as a small diff."""
    write_json_atomic(path, obj, sort_keys=True)


def read_json(path: str, default=None):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return default
    except (ValueError, UnicodeDecodeError) as exc:
        raise DeployError("{}: not valid JSON ({})".format(path, exc)) from None


def atomic_symlink(target: str, link: str) -> None:
    """Point *link* at *target* in one rename: readers see the old or the new target, never none."""
    tmp = "{}.tmp-{}".format(link, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(os.path.dirname(os.path.abspath(link)))


class Lock:
    """An exclusive ``flock`` on *path*; waits up to *timeout* seconds, then raises DeployError."""

    def __init__(self, path: str, timeout: float = 60.0):
        self.path = path
        self.timeout = timeout
        self.fd: Optional[int] = None

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    os.close(self.fd)
                    raise DeployError(
                        "{}: another deploy holds the lock (waited {:.0f} s)".format(self.path, self.timeout)
                    ) from None
                time.sleep(0.2)

    def __exit__(self, *exc):
        os.close(cast(int, self.fd))
        self.fd = None
