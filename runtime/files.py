"""Safe file names and atomic writers: write a temporary sibling, fsync it, then rename over the target."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import tempfile
from typing import Iterator, Optional

TMP_TAG = ".tmp-"  # every temporary sibling is named "." + target name + TMP_TAG + random


def slug(name: str) -> str:
    """*name* as a file-name part: letters, digits, ``._-`` only."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "superclass"


def fault_point(name: str) -> None:
    """``EDGETOOL_FAULT_KILL=<name>`` kills the process here with SIGKILL; ``EDGETOOL_FAULT_SIGNAL_PARENT=
    <name>=<SIGNAL>`` sends SIGNAL to its parent here (a deploy's driver, signalled while a device
    step runs).  Fault-injection tests only."""
    if os.environ.get("EDGETOOL_FAULT_KILL") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    point, _, sig = os.environ.get("EDGETOOL_FAULT_SIGNAL_PARENT", "").partition("=")
    if point == name and sig.startswith("SIG") and hasattr(signal, sig):
        os.environ["EDGETOOL_FAULT_SIGNAL_PARENT"] = ""  # once per process, as one kill(1) would
        os.kill(os.getppid(), getattr(signal, sig))


def fsync_dir(path: str) -> None:
    """Make a rename inside folder *path* durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_prefix(name: str) -> str:
    """A temporary sibling of *name* is named this, then random: hidden, and its owner's pid in it."""
    return "." + name + TMP_TAG + "{}-".format(os.getpid())


def default_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under this process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def cannot_write(path: str, exc: OSError):
    """The :class:`~.errors.OutputError` for a write to *path* that failed with *exc*."""
    from .errors import OutputError

    why = exc.strerror or str(exc)
    return OutputError("{}: cannot be written ({}); nothing was written under this name".format(path, why))


def _mkstemp(path: str):
    folder, name = os.path.split(os.path.abspath(path))
    try:
        return tempfile.mkstemp(prefix=temp_prefix(name), dir=folder)
    except OSError as exc:
        raise cannot_write(path, exc) from None


def _remove_quietly(tmp: str) -> None:
    try:
        if os.path.lexists(tmp):
            os.remove(tmp)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_path(path: str, mode: Optional[int] = None) -> Iterator[str]:
    """The one atomic writer: yield a new temporary sibling of *path* for the caller to write by
    name (``torch.save``, a download, bytes); when the block ends it is flushed to disk, given
    *mode* (default: what ``open`` would give) and renamed over *path*, durably.  On an error or a
    signal (:mod:`.signals` turns SIGTERM and SIGHUP into exceptions) it is removed, and *path*
    keeps its old content.  A write that fails (a full disk, say) is one
    :class:`~.errors.OutputError` naming *path*."""
    fd, tmp = _mkstemp(path)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode() if mode is None else mode)
    except OSError as exc:
        _remove_quietly(tmp)
        raise cannot_write(path, exc) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    commit(tmp, path)


def write_temp(path: str, data: bytes, mode: Optional[int] = None) -> str:
    """*data* in a new temporary sibling of *path*, flushed to disk; returns the sibling's path (for
    a writer that commits several files in an order of its own, with :func:`commit`)."""
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode() if mode is None else mode)
    except OSError as exc:
        _remove_quietly(tmp)
        raise cannot_write(path, exc) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return tmp


def commit(tmp: str, path: str) -> None:
    """Rename the temporary sibling *tmp* over *path* and make the rename durable."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise cannot_write(path, exc) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_bytes_atomic(path: str, data: bytes, mode: Optional[int] = None) -> None:
    """*path* holds its old bytes or *data*, never a mix, whenever the process or machine stops."""
    commit(write_temp(path, data, mode), path)


def write_json_atomic(path: str, obj, sort_keys: bool = False, mode: Optional[int] = None) -> None:
    """*obj* as indented strict JSON (NaN refused), atomically."""
    text = json.dumps(obj, indent=1, sort_keys=sort_keys, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), mode)


def stale_temps(folder: str, name: str):
    """Temporary siblings of *folder*/*name* that a stopped writer left (regular files only)."""
    prefix = "." + name + TMP_TAG
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    out = []
    for e in entries:
        p = os.path.join(folder, e)
        if e.startswith(prefix) and os.path.isfile(p) and not os.path.islink(p):
            out.append(p)
    return out


def sha256_file(path: str, algorithm: str = "sha256") -> str:
    """The hex digest (sha256 unless *algorithm* names another hashlib one) of the file at *path*, read
    1 MiB at a time."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_output(path: str, what: str, folder: bool = False) -> None:
    """Before any work: *path* can be written as a file (or, with *folder*, made or reused as a
    folder).  Raises one :class:`~.errors.UsageError` line naming *what* and the reason."""
    from .errors import UsageError

    path = os.path.abspath(os.fspath(path))
    if folder:
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError("{} {}: exists and is not a folder".format(what, path))
        parent = path
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
    else:
        if os.path.isdir(path):
            raise UsageError("{} {}: is a folder; give a file name".format(what, path))
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise UsageError("{} {}: the folder {} does not exist".format(what, path, parent))
    if not os.path.isdir(parent):
        raise UsageError("{} {}: {} is not a folder".format(what, path, parent))
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError("{} {}: cannot be written here (permission denied)".format(what, path))
    try:  # root passes every access check: make (and remove) a file there, as the writer will
        fd, probe = tempfile.mkstemp(prefix=temp_prefix(os.path.basename(path) or "probe"), dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise UsageError("{} {}: cannot be written here ({})".format(what, path, exc.strerror or exc)) from None
