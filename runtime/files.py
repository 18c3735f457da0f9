"""Safe file names and atomic writers: write a temporary sibling, fsync it, then rename over the target."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import tempfile

TMP_TAG = ".tmp-"  # every temporary sibling is named "." + target name + TMP_TAG + random


def slug(name: str) -> str:
    """*name* as a file-name part: letters, digits, ``._-`` only."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "superclass"


def fault_point(name: str) -> None:
    """``EDGETOOL_FAULT_KILL=<name>`` kills the process here with SIGKILL (fault-injection tests)."""
    if os.environ.get("EDGETOOL_FAULT_KILL") == name:
        os.kill(os.getpid(), signal.SIGKILL)


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


def write_temp(path: str, data: bytes) -> str:
    """*data* in a new temporary sibling of *path*, flushed to disk; returns the sibling's path."""
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + name + TMP_TAG, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.remove(tmp)
        raise
    return tmp


def commit(tmp: str, path: str) -> None:
    """Rename the temporary sibling *tmp* over *path* and make the rename durable."""
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_bytes_atomic(path: str, data: bytes) -> None:
    """*path* holds its old bytes or *data*, never a mix, whenever the process or machine stops."""
    commit(write_temp(path, data), path)


def write_json_atomic(path: str, obj) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=1).encode("utf-8"))


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
