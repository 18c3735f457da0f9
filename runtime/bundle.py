"""Bundle reader: the only thing that crosses from the workstation to the device.

A bundle is a directory (or a ``.tar``/``.tar.gz`` archive of one)::

    manifest.json
    base.onnx                 superclass network, Q/DQ int8
    deltas/<superclass>.<ext> packed delta per subclass network (codec in the manifest)
    samples.npy               a few preprocessed inputs, for self-tests
    engines/...               optional, built on the device

Every file is checked against the manifest (size and sha256) before use; any mismatch
raises :class:`BundleError` naming the file, and nothing is applied.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import codecs
from .errors import BundleError, CodecError, UsageError
from .weights import PackedLayout, sha256_bytes

SCHEMA = "edgetool.bundle/1"
MANIFEST = "manifest.json"
# A file whose mtime/ctime lies this close to the moment it was hashed is not remembered as
# verified: a write in the same timestamp tick could leave its stat unchanged (git's "racy
# clean" problem).  2 s covers the coarsest common timestamps (FAT).
RACY_NS = 2 * 10**9


def _stat_key(st: os.stat_result) -> Tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Superclass:
    __slots__ = ("index", "name", "subclasses")

    def __init__(self, index: int, name: str, subclasses: List[str]):
        self.index = index
        self.name = name
        self.subclasses = list(subclasses)

    def __repr__(self):
        return "Superclass({}, {!r}, {} subclasses)".format(self.index, self.name, len(self.subclasses))


class Bundle:
    """A verified, read-only view of a bundle."""

    def __init__(self, root: str, manifest: dict, archive: Optional[str] = None):
        self.root = root
        self.archive = archive
        self.manifest = manifest
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self._base: Optional[bytes] = None  # base.onnx bytes, kept once verified (every backend needs them)
        self._verified: Dict[str, tuple] = {}  # file -> stat key when its sha256 (and decode) last passed
        try:
            self.layout = PackedLayout.from_dict(manifest["refit"])
            self.superclasses = [Superclass(i, s["name"], s["subclasses"])
                                 for i, s in enumerate(manifest["hierarchy"]["superclasses"])]
            self.head_width = int(manifest["head_width"])
            self.input = dict(manifest["input"])
            self.output_name = manifest["output"]["name"]
            self.deltas = list(manifest["deltas"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                self._display(MANIFEST), "malformed manifest ({}: {})".format(type(exc).__name__, exc)
            ) from None
        if len(self.deltas) != len(self.superclasses):
            raise BundleError(self._display(MANIFEST), "{} delta entries for {} superclasses".format(
                len(self.deltas), len(self.superclasses)))
        need = max([len(self.superclasses)] + [len(s.subclasses) for s in self.superclasses])
        if self.head_width < need:
            raise BundleError(self._display(MANIFEST), "head_width {} < {} classes".format(self.head_width, need))

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, path, verify: bool = True) -> "Bundle":
        path = os.fspath(path)
        if not os.path.exists(path):
            raise UsageError("{}: no such bundle (expected a directory or a .tar/.tar.gz archive)".format(path))
        archive = None
        tmp = None
        if os.path.isfile(path):
            if not tarfile.is_tarfile(path):
                raise BundleError(path, "not a bundle directory nor a tar archive of one")
            tmp = tempfile.TemporaryDirectory(prefix="edgetool-bundle-")
            root = _extract(path, tmp.name)
            archive = path
        else:
            root = path
        mpath = os.path.join(root, MANIFEST)
        display = os.path.join(archive or root, MANIFEST)
        if not os.path.isfile(mpath):
            raise BundleError(display, "missing; {} is not a bundle".format(archive or root))
        try:
            with open(mpath, "rb") as f:
                manifest = json.loads(f.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(display, "not valid JSON ({})".format(exc)) from None
        if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
            raise BundleError(display, "unknown schema {!r}; this edgetool reads {!r}".format(
                manifest.get("schema") if isinstance(manifest, dict) else None, SCHEMA))
        bundle = cls(root, manifest, archive)
        bundle._tmp = tmp
        if verify:
            bundle.verify()
        return bundle

    def _display(self, rel: str) -> str:
        if self.archive:
            return "{}:{}".format(self.archive, rel)
        return os.path.join(self.root, rel)

    # -- files ------------------------------------------------------------------------
    def files(self) -> List[dict]:
        """Every file entry of the manifest: base, deltas, samples, engines."""
        entries = [self.manifest["base"]] + self.deltas
        if self.manifest.get("samples"):
            entries.append(self.manifest["samples"])
        entries += self.manifest.get("engines", [])
        return entries

    def read_file(self, entry: dict) -> bytes:
        """Read one file and check its size and sha256 against the manifest entry."""
        return self._read(entry)[0]

    def _read(self, entry: dict) -> Tuple[bytes, bool, Optional[tuple]]:
        """(data, unchanged, mark): *unchanged* when the file is the very one verified before, so its
        sha256 is not computed again.  The file is stat'ed on its open descriptor before and
        after the read; any write or replacement changes its ctime, inode or size, and then
        the data is hashed again.  A file changed on disk is never returned unchecked.  *mark*
        is what to remember in ``_verified`` once every further check of the data passes."""
        rel = entry["file"]
        full = os.path.join(self.root, rel)
        shown = self._display(rel)
        if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            raise BundleError(shown, "file path escapes the bundle")
        try:
            with open(full, "rb") as f:
                key = _stat_key(os.fstat(f.fileno()))
                data = f.read()
                same = _stat_key(os.fstat(f.fileno())) == key
        except FileNotFoundError:
            raise BundleError(shown, "missing (listed in the manifest)") from None
        except OSError as exc:
            raise BundleError(shown, "cannot read ({})".format(exc.strerror)) from None
        size = entry.get("stored_size", entry.get("size"))
        if size is not None and len(data) != int(size):
            raise BundleError(shown, "size {} bytes, manifest says {} (truncated or replaced?)".format(len(data), size))
        if same and self._verified.get(rel) == (key, entry["sha256"]):
            return data, True, None
        self._verified.pop(rel, None)
        digest = sha256_bytes(data)
        if digest != entry["sha256"]:
            raise BundleError(shown, "sha256 mismatch: file {}..., manifest {}... (corrupt file or edited "
                                     "manifest)".format(digest[:12], entry["sha256"][:12]))
        settled = time.time_ns() - max(key[3], key[4]) > RACY_NS
        return data, False, ((key, entry["sha256"]) if same and settled else None)

    def verify(self) -> None:
        for entry in self.files():
            data = self.read_file(entry)
            if entry is self.manifest["base"]:
                self._base = data

    def base_onnx(self) -> bytes:
        if self._base is None:
            self._base = self.read_file(self.manifest["base"])
        return self._base

    def delta_entry(self, index: int) -> dict:
        if not 0 <= index < len(self.deltas):
            raise UsageError("subclass index {} out of range 0..{}".format(index, len(self.deltas) - 1))
        return self.deltas[index]

    def read_delta(self, index: int) -> np.ndarray:
        """Read, verify and decode delta *index* into a packed uint8 buffer.

        A delta file read, hashed and decoded successfully before, and unchanged on disk
        since (same inode, size, mtime and ctime), is not hashed again."""
        entry = self.delta_entry(index)
        data, unchanged, mark = self._read(entry)
        try:
            raw = codecs.decode(entry["codec"], data)
        except CodecError as exc:
            raise BundleError(self._display(entry["file"]), str(exc)) from None
        if len(raw) != int(entry["raw_size"]) or len(raw) != self.layout.total_nbytes:
            raise BundleError(self._display(entry["file"]), "decodes to {} bytes, manifest says {}".format(
                len(raw), entry["raw_size"]))
        if not unchanged and "raw_sha256" in entry and sha256_bytes(raw) != entry["raw_sha256"]:
            raise BundleError(self._display(entry["file"]), "decoded delta fails its sha256 check")
        if mark:
            self._verified[entry["file"]] = mark
        return np.frombuffer(raw, dtype=np.uint8)

    def samples(self) -> Optional[np.ndarray]:
        entry = self.manifest.get("samples")
        if not entry:
            return None
        data = self.read_file(entry)
        return np.load(io.BytesIO(data), allow_pickle=False)

    # -- hierarchy helpers ---------------------------------------------------------------
    @property
    def num_superclasses(self) -> int:
        return len(self.superclasses)

    def superclass_index(self, name_or_index) -> int:
        if isinstance(name_or_index, int) or (isinstance(name_or_index, str) and name_or_index.isdigit()):
            idx = int(name_or_index)
            if 0 <= idx < len(self.superclasses):
                return idx
        else:
            for s in self.superclasses:
                if s.name == name_or_index:
                    return s.index
        raise UsageError("no superclass {!r}; the bundle has: {}".format(
            name_or_index, ", ".join(s.name for s in self.superclasses)))

    def stored_bytes(self) -> Dict[str, int]:
        base = int(self.manifest["base"]["size"])
        deltas = sum(int(d["stored_size"]) for d in self.deltas)
        return {"base": base, "deltas": deltas, "total": base + deltas}

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _extract(archive: str, dest: str) -> str:
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                name = m.name.replace("\\", "/")
                if name.startswith("/") or ".." in name.split("/") or not (m.isfile() or m.isdir()):
                    raise BundleError(archive, "unsafe archive member {!r}".format(m.name))
            tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(archive, "cannot unpack archive ({})".format(exc)) from None
    # A tar of the bundle directory has one top-level folder; a tar of its contents has none.
    if os.path.isfile(os.path.join(dest, MANIFEST)):
        return dest
    entries = [e for e in os.listdir(dest) if not e.startswith(".")]
    if len(entries) == 1 and os.path.isfile(os.path.join(dest, entries[0], MANIFEST)):
        return os.path.join(dest, entries[0])
    raise BundleError(archive, "archive holds no {}".format(MANIFEST))
