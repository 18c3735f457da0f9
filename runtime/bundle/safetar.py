"""Unpack a bundle archive (.tar, .tar.gz, .tar.xz, .tar.bz2) only after checking it.

Pass 1 reads the member headers as a stream, writing nothing: member count, names (plain
relative paths, one optional top-level folder), types (files and folders only) and
declared sizes, and reads ``manifest.json`` (capped).  The manifest is validated; then
every file member must be a file the manifest lists, with the size it declares, and the
total must fit the manifest's budget.  Pass 2 unpacks, creating each file with
``O_EXCL | O_NOFOLLOW`` and stopping at the budget.
"""

from __future__ import annotations

import os
import tarfile
import zlib

from . import manifest as M
from ..errors import BundleError
from .names import FieldError

MAX_MEMBERS = 10000
MAX_TOTAL = 4 << 30  # before the manifest is known
_DIRS = ("", "deltas", "engines")
_CHUNK = 1 << 20


def _errors():
    import lzma

    return (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


def unpack(archive: str, dest: str) -> str:
    """Check then unpack *archive* into *dest*; return the bundle root inside *dest*."""
    try:
        prefix, files, allowed = _scan(archive)
        _extract(archive, dest, prefix, allowed)
    except BundleError:
        raise
    except _errors() as exc:
        raise BundleError(archive, "cannot unpack archive ({})".format(exc)) from None
    return os.path.join(dest, prefix) if prefix else dest


def _split(archive: str, name: str):
    parts = name.replace("\\", "/").split("/")
    while parts and parts[-1] == "":
        parts.pop()
    if parts and parts[0] == ".":
        parts = parts[1:]
    if not parts and name.strip("/") == ".":
        return []  # the archive's own root folder ("tar -C bundle .")
    if not parts or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in name:
        raise BundleError(archive, "unsafe archive member {}".format(ascii(name)[:80]))
    return parts


def _prefix(archive: str, names) -> str:
    tops = {p[0] for p in names}
    if any(len(p) == 1 and p[0] == M.MANIFEST for p in names):
        return ""
    if len(tops) == 1 and any(len(p) == 2 and p[1] == M.MANIFEST for p in names):
        return next(iter(tops))
    raise BundleError(archive, "archive holds no {}".format(M.MANIFEST))


def _header(archive: str, m, count: int, total: int):
    """Checks of one member header; returns its path parts (None for the archive's root folder)."""
    if count >= MAX_MEMBERS:
        raise BundleError(archive, "more than {} archive members".format(MAX_MEMBERS))
    parts = _split(archive, m.name)
    if not parts and m.isdir():
        return None
    if not parts:
        raise BundleError(archive, "unsafe archive member {}".format(ascii(m.name)[:80]))
    if not (m.isfile() or m.isdir()):
        raise BundleError(archive, "archive member {} is not a file or folder".format(ascii(m.name)[:80]))
    if m.isfile() and (m.size > M.MAX_FILE_BYTES or total + m.size > MAX_TOTAL):
        raise BundleError(
            archive, "archive member {} declares {} bytes, over the limit".format(ascii(m.name)[:80], m.size)
        )
    return parts


def _scan(archive: str):
    """Pass 1: headers and manifest only; returns (prefix, {rel: size}, allowed {rel: size})."""
    members: list = []
    manifests = {}
    total = 0
    early = None  # once a top-level manifest.json has been read: {rel: size} to check each member at its header
    with tarfile.open(archive, "r|*") as tar:
        for m in tar:
            parts = _header(archive, m, len(members), total)
            if parts is None:
                continue
            if m.isfile():
                total += m.size
                if early is not None:
                    _check_early(archive, early, parts, m.size)
                if parts[-1] == M.MANIFEST and len(parts) <= 2:
                    if m.size > M.MAX_MANIFEST_BYTES:
                        raise BundleError(archive, "manifest.json declares {} bytes, over the limit".format(m.size))
                    f = tar.extractfile(m)
                    if f is None:
                        raise BundleError(archive, "manifest.json cannot be read from the archive")
                    data = f.read(M.MAX_MANIFEST_BYTES + 1)
                    manifests["/".join(parts)] = data
                    if not any(not d for _, d, _ in members):  # the first file: check the rest at their headers
                        early = (parts[0] if len(parts) == 2 else "", _allowed(archive, data))
            members.append((parts, m.isdir(), m.size))
    prefix = _prefix(archive, [p for p, _, _ in members])
    allowed = _allowed(archive, manifests.get(prefix + "/" + M.MANIFEST if prefix else M.MANIFEST, b""))
    files = {}
    for parts, is_dir, size in members:
        if prefix and parts[0] != prefix:
            raise BundleError(archive, "archive member {} is outside the bundle folder".format(ascii("/".join(parts))))
        rel = "/".join(parts[1:] if prefix else parts)
        if is_dir:
            if rel not in _DIRS:
                raise BundleError(archive, "unexpected folder {} in the archive".format(ascii(rel)))
        elif allowed.get(rel) != size:
            why = (
                "is not listed in the manifest"
                if rel not in allowed
                else "declares {} bytes, manifest says {}".format(size, allowed[rel])
            )
            raise BundleError(archive, "archive member {} {}".format(ascii(rel)[:80], why))
        elif rel in files:
            raise BundleError(archive, "archive member {} appears twice".format(ascii(rel)))
        else:
            files[rel] = size
    return prefix, files, allowed


def _check_early(archive: str, early, parts, size: int) -> None:
    prefix, allowed = early
    if prefix and parts[0] != prefix:
        raise BundleError(archive, "archive member {} is outside the bundle folder".format(ascii("/".join(parts))[:80]))
    rel = "/".join(parts[1:] if prefix else parts)
    if rel != M.MANIFEST and allowed.get(rel) != size:
        raise BundleError(
            archive,
            "archive member {} ({} bytes) is not a file the manifest lists with that size".format(
                ascii(rel)[:80], size
            ),
        )


def _allowed(archive: str, data: bytes) -> dict:
    where = "{}:{}".format(archive, M.MANIFEST)
    try:
        model = M.parse(M.loads(data))
    except (M.ManifestError, FieldError) as exc:
        raise BundleError(where, str(exc)) from None
    allowed = {f.file: f.size for f in model.files()}
    allowed[M.MANIFEST] = len(data)
    return _Allowed(allowed)


class _Allowed(dict):
    """Manifest-listed sizes, plus an optional ``manifest.sig`` (a small signature file beside the manifest)."""

    def get(self, key, default=None):
        if key == SIGNATURE and key not in self:
            return _ANY_SMALL
        return dict.get(self, key, default)


class _AnySmall:
    def __eq__(self, size):
        return isinstance(size, int) and 0 <= size <= MAX_SIGNATURE

    def __ne__(self, size):
        return not self.__eq__(size)


SIGNATURE = "manifest.sig"
MAX_SIGNATURE = 4096
_ANY_SMALL = _AnySmall()


def _extract(archive: str, dest: str, prefix: str, allowed: dict) -> None:
    """Pass 2: write the checked members; never more bytes than the manifest's budget."""
    budget = sum(allowed.values()) + MAX_SIGNATURE
    if prefix:
        os.mkdir(os.path.join(dest, prefix))
    root = os.path.join(dest, prefix) if prefix else dest
    with tarfile.open(archive, "r|*") as tar:
        for m in tar:
            parts = _split(archive, m.name)
            if not parts:
                continue
            rel = "/".join(parts[1:] if prefix else parts)
            target = os.path.join(root, *rel.split("/")) if rel else root
            if m.isdir():
                if rel and not os.path.isdir(target):
                    os.mkdir(target)
                continue
            if allowed.get(rel) != m.size or m.size > budget:
                raise BundleError(archive, "archive member {} changed between reads".format(ascii(rel)[:80]))
            budget -= m.size
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _copy(tar.extractfile(m), target, m.size)


def _copy(src, target: str, size: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        left = size
        while left > 0:
            b = src.read(min(left, _CHUNK))
            if not b:
                raise EOFError("archive ends inside {}".format(os.path.basename(target)))
            out.write(b)
            left -= len(b)
