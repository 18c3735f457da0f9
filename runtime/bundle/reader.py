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
import os
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import codecs, safeio, safetar
from . import manifest as M
from ..errors import BundleError, CodecError, UsageError
from .learned_routing import FEATURES
from .names import FieldError
from .onnx_weights import graph_io
from .refit_set import check_within
from ..preprocess import NPY_ERRORS, npy_header
from .sparse_codec import SparseDelta
from .weights import sha256_bytes

SCHEMA = M.SCHEMA
MANIFEST = M.MANIFEST
# A file whose mtime/ctime lies this close to the moment it was hashed is not remembered as
# verified: a write in the same timestamp tick could leave its stat unchanged (git's "racy
# clean" problem).  2 s covers the coarsest common timestamps (FAT).
RACY_NS = 2 * 10**9


class Superclass:
    """One subclass network's classes; ``overlap``: those primary in another superclass (shared)."""

    __slots__ = ("index", "name", "subclasses", "overlap")

    def __init__(self, index: int, name: str, subclasses: List[str], overlap: Sequence[str] = ()):
        self.index = index
        self.name = name
        self.subclasses = list(subclasses)
        self.overlap = list(overlap)

    def __repr__(self):
        return "Superclass({}, {!r}, {} subclasses)".format(self.index, self.name, len(self.subclasses))


class Bundle:
    """A verified, read-only view of a bundle (its manifest validated by :mod:`.manifest`)."""

    def __init__(self, root: str, manifest: dict, archive: Optional[str] = None):
        self.root = root
        self.archive = archive
        self.manifest = manifest
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self._base: Optional[bytes] = None  # base.onnx bytes, kept once verified (every backend needs them)
        self._verified: Dict[str, tuple] = {}  # file -> stat key when its sha256 (and decode) last passed
        try:
            self.model = M.parse(manifest)
        except FieldError as exc:
            raise BundleError(self._display(MANIFEST), str(exc)) from None
        self.layout = self.model.layout
        over = self.model.overlap or [()] * len(self.model.superclasses)
        self.superclasses = [
            Superclass(i, n, list(s), o) for i, ((n, s), o) in enumerate(zip(self.model.superclasses, over))
        ]
        self.head_width = self.model.head_width
        self.routing = self.model.routing  # None: the runtime's defaults (runtime.routing)
        self.not_mine = self.model.not_mine  # a "not mine" head row after each subclass network's classes
        self.kind, self.flat_route = self.model.kind, M.flat_route(self.model)  # "flat": one network, no switch
        self.specialists = list(self.model.specialists)  # a flat bundle's superclasses with a specialist delta
        self.input = dict(manifest["input"])
        self.output_name = self.model.output_name
        self.deltas = list(manifest["deltas"])
        self._entries = {f.file: f for f in self.model.files()}

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, path, verify: bool = True) -> "Bundle":
        path = os.fspath(path)
        if not os.path.exists(path):
            raise UsageError("{}: no such bundle (expected a directory or a .tar/.tar.gz archive)".format(path))
        if not os.path.isfile(path):
            return cls._open_root(path, None, verify)
        tmp = tempfile.TemporaryDirectory(prefix="edgetool-bundle-")
        try:
            root = safetar.unpack(path, tmp.name)
            bundle = cls._open_root(root, path, verify)
        except BaseException:  # an error or a signal: nothing stays in the temp dir
            tmp.cleanup()
            raise
        bundle._tmp = tmp
        return bundle

    @classmethod
    def _open_root(cls, root: str, archive: Optional[str], verify: bool) -> "Bundle":
        display = "{}:{}".format(archive, MANIFEST) if archive else os.path.join(root, MANIFEST)
        try:
            fd = safeio.open_inside(root, MANIFEST, display)
        except BundleError as exc:
            if "missing" in str(exc):
                raise BundleError(display, "missing; {} is not a bundle".format(archive or root)) from None
            raise
        try:
            with os.fdopen(fd, "rb") as f:
                data = f.read(M.MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise BundleError(display, "cannot read ({})".format(exc.strerror)) from None
        try:
            manifest = M.loads(data)
        except M.ManifestError as exc:
            raise BundleError(display, str(exc)) from None
        bundle = cls(root, manifest, archive)
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

    def read_file(self, entry) -> bytes:
        """Read one file (at most its declared size) and check its size and sha256 against the manifest."""
        return self._read(entry)[0]

    def _read(self, entry) -> Tuple[bytes, bool, Optional[tuple]]:
        """(data, unchanged, mark): *unchanged* when the file is the very one verified before, so its
        sha256 is not computed again.  The file is stat'ed on its open descriptor before and
        after the read; any write or replacement changes its ctime, inode or size, and then
        the data is hashed again.  A file changed on disk is never returned unchecked.  *mark*
        is what to remember in ``_verified`` once every further check of the data passes."""
        rel = entry["file"] if isinstance(entry, dict) else entry.file
        checked = self._entries.get(rel)
        shown = self._display(str(rel))
        if checked is None:
            raise BundleError(shown, "not listed in the manifest")
        data, key, same = safeio.read_capped_keyed(self.root, rel, checked.size, shown)
        if same and self._verified.get(rel) == (key, checked.sha256):
            return data, True, None
        self._verified.pop(rel, None)
        digest = sha256_bytes(data)
        if digest != checked.sha256:
            raise BundleError(
                shown,
                "sha256 mismatch: file {}..., manifest {}... (corrupt file or edited manifest)".format(
                    digest[:12], checked.sha256[:12]
                ),
            )
        settled = time.time_ns() - max(key[3], key[4]) > RACY_NS
        return data, False, ((key, checked.sha256) if same and settled else None)

    def verify(self) -> None:
        for entry in self.model.files():
            data = self.read_file(entry)
            if entry is self.model.base:
                self._base = data
                self._check_graph(data)

    def _check_graph(self, model: bytes) -> None:
        """The input spec and head width match base.onnx's graph."""
        shown = self._display(self.model.base.file)
        try:
            inputs, outputs = graph_io(model)
        except (ValueError, IndexError) as exc:
            raise BundleError(shown, "not a readable ONNX model ({})".format(exc)) from None
        name = self.input.get("name", "input")
        dims = inputs.get(name)
        if dims is None or list(dims[1:]) != list(self.model.input_shape):
            raise BundleError(
                shown,
                "input {!r} has dims {}, the manifest says (N, {}, {}, {})".format(name, dims, *self.model.input_shape),
            )
        out = outputs.get(self.output_name)
        if out is None or not out or out[-1] != self.head_width:
            raise BundleError(
                shown,
                "output {!r} has dims {}, the manifest's head_width is {}".format(
                    self.output_name, out, self.head_width
                ),
            )
        width = self.routing.learned.features if self.routing and self.routing.learned else 0
        feats = outputs.get(FEATURES)
        if width and (not feats or feats[-1] != width):
            why = "routing.learned.features is {}, the model's {!r} output has dims {}"
            raise BundleError(shown, why.format(width, FEATURES, feats))

    def base_onnx(self) -> bytes:
        if self._base is None:
            data = self.read_file(self.model.base)
            self._check_graph(data)
            self._base = data
        return self._base

    def delta_entry(self, index: int) -> dict:
        if not 0 <= index < len(self.deltas):
            raise UsageError("subclass index {} out of range 0..{}".format(index, len(self.deltas) - 1))
        return self.deltas[index]

    def read_delta(self, index: int, sparse: bool = False) -> Union[np.ndarray, SparseDelta]:
        """Read, verify and decode delta *index* into a packed uint8 buffer (decoding capped at its size).

        With *sparse*, a delta stored by the ``sparse`` codec comes back as a
        :class:`~.sparse_codec.SparseDelta` (gaps and values, never expanded), which
        :class:`~.packed.PackedWeights` scatter-adds in place.  A delta file read, hashed and
        decoded successfully before, and unchanged on disk since (same inode, size, mtime and
        ctime), is not hashed again; its decoded form is hashed, and checked to change only the
        manifest's ``refit.changed`` tensors (:mod:`.refit_set`), only on that first, verifying read."""
        self.delta_entry(index)
        entry = self.model.deltas[index]
        data, unchanged, mark = self._read(entry)
        try:
            delta = codecs.decode_delta(entry.codec, data, entry.raw_size)
        except CodecError as exc:
            raise BundleError(self._display(entry.file), str(exc)) from None
        if not unchanged and entry.raw_sha256 is not None:
            raw = delta.dense() if isinstance(delta, SparseDelta) else delta
            if sha256_bytes(raw) != entry.raw_sha256:
                raise BundleError(self._display(entry.file), "decoded delta fails its sha256 check")
            if not sparse:
                delta = raw
        if not unchanged:
            check_within(self.layout, self.model.changed, delta, self._display(entry.file))
        if mark:
            self._verified[entry.file] = mark
        if isinstance(delta, SparseDelta) and not sparse:
            delta = delta.dense()
        return delta

    def samples(self) -> Optional[np.ndarray]:
        entry = self.model.samples
        if entry is None:
            return None
        data = self.read_file(entry)
        shown = self._display(entry.file)
        f = io.BytesIO(data)
        try:
            shape, fortran, dtype = npy_header(f)  # checked before numpy allocates anything
            if dtype != np.float32 or tuple(shape) != self.model.samples_shape:
                want = list(self.model.samples_shape or ())
                raise BundleError(shown, "holds {} {}, the manifest says float32 {}".format(dtype, tuple(shape), want))
            a = np.frombuffer(f.read(), dtype=np.float32)
            return a.reshape(shape, order="F" if fortran else "C").copy()
        except NPY_ERRORS as exc:
            raise BundleError(shown, "not a float32 .npy array ({})".format(str(exc)[:120])) from None

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
        raise UsageError(
            "no superclass {!r}; the bundle has: {}".format(name_or_index, ", ".join(s.name for s in self.superclasses))
        )

    def stored_bytes(self) -> Dict[str, int]:
        base = self.model.base.size
        deltas = sum(d.size for d in self.model.deltas)
        return {"base": base, "deltas": deltas, "total": base + deltas}

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
