"""The camera's output files: each written to a hidden ``.NAME.partial-PID`` sibling and renamed
into place only when complete; what a killed run left is found by its dead PID; the JSON lines
writer.  (The video writer is :class:`.outputs.VideoOut`.)"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from typing import List, Optional

from ..errors import OutputError, UsageError
from ..files import cannot_write, fsync_dir


def temp_sibling(path: str, pid: Optional[int] = None) -> str:
    d, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(d, ".{}.partial-{}{}".format(stem, os.getpid() if pid is None else pid, ext))


def check_out_dir(path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UsageError("{}: no such folder for the output".format(d))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def stale_partials(path: str) -> List[str]:
    """The hidden ``.partial`` siblings of *path* that a stopped run left (killed: its process is
    gone); regular files only, never another live run's."""
    d, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    pattern = re.compile(r"^\.{}\.partial-(\d+){}$".format(re.escape(stem), re.escape(ext)))
    try:
        entries = sorted(os.listdir(d))
    except OSError:
        return []
    out = []
    for e in entries:
        m = pattern.match(e)
        p = os.path.join(d, e)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return out


def remove_stale_partials(path: str) -> List[str]:
    """Remove what :func:`stale_partials` finds; returns the paths removed."""
    removed = []
    for p in stale_partials(path):
        try:
            os.remove(p)
            removed.append(p)
        except OSError:
            pass
    return removed


def disk_full(folder: str) -> bool:
    """True when the file system holding *folder* has no block left for this process (root may
    use the reserved blocks).  False where the file system does not say (no blocks reported)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return st.f_blocks > 0 and free == 0


def no_space(path: str, frames: int) -> OutputError:
    return OutputError(
        "{}: cannot be written ({} after {} frames); nothing was written under this name".format(
            path, os.strerror(errno.ENOSPC), frames
        )
    )


def remove_quietly(path: str) -> None:
    try:
        if path and os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


class JsonLines:
    """One JSON object per line, to stdout (``path`` None) or to a file: a hidden ``.partial``
    sibling, flushed to disk and renamed into place when the run completes.  A write that fails
    (a full disk) is an :class:`OutputError`; the partial file is then removed, and so is it when
    the run ends on an unexpected error."""

    def __init__(self, path: Optional[str] = None):
        self.path = path
        self.failed = False
        self.removed_stale: List[str] = []
        if path is None:
            self.f, self.tmp = sys.stdout, None
        else:
            check_out_dir(path)
            self.removed_stale = remove_stale_partials(path)
            self.tmp = temp_sibling(path)
            try:
                self.f = open(self.tmp, "w")
            except OSError as exc:
                raise cannot_write(path, exc) from None

    def write(self, record: dict) -> None:
        if self.failed:
            return
        try:
            self.f.write(json.dumps(record, allow_nan=False) + "\n")
            if self.tmp is None:
                self.f.flush()
        except OSError as exc:
            if self.tmp is None:
                raise
            self._abort()
            raise cannot_write(str(self.path), exc) from None

    def _abort(self) -> None:
        self.failed = True
        try:
            self.f.close()
        except OSError:
            pass
        remove_quietly(str(self.tmp))

    def close(self, complete: bool = True) -> None:
        if self.tmp is None:
            self.f.flush()
            return
        if self.failed or self.f.closed:
            return
        if not complete:
            self._abort()
            return
        try:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            os.replace(self.tmp, str(self.path))
        except OSError as exc:
            self._abort()
            raise cannot_write(str(self.path), exc) from None
        fsync_dir(os.path.dirname(os.path.abspath(str(self.path))))
