"""Property-based fuzz targets (hypothesis): only the project's own error types may come out.

Shared by ``tests/runtime/bundle/test_fuzz.py`` (CI budget) and ``benchmarks/fuzz_long.py`` (the long run).
Each target counts the cases it ran in ``COUNTS``.
"""

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetool.runtime.bundle import codecs, safetar
from edgetool.runtime.bundle import manifest as M
from edgetool.runtime.errors import BundleError, CodecError, UsageError
from edgetool.runtime.bundle.names import FieldError
from edgetool.runtime.bundle.onnx_weights import graph_io, read_initializers
from edgetool.runtime.preprocess import load_image
from edgetool.runtime.bundle.weights import PackedLayout, TensorSpec, sha256_bytes

COUNTS = Counter()
RAW = bytes((np.arange(4096) * 7 % 5).astype(np.uint8))  # a small compressible "delta"
SIZE = len(RAW)


def synthetic_manifest() -> dict:
    """A valid manifest of a tiny network: conv (4x1x3x3) + bias, fc (4x4) + bias; 2 superclasses;
    a "not mine" row after each subclass network's classes; gated top-2 routing, learned."""
    layout = PackedLayout.build(
        [
            TensorSpec("conv.weight", "weight", "int8", (4, 1, 3, 3), scale=[0.1] * 4),
            TensorSpec("conv.bias", "bias", "float32", (4,)),
            TensorSpec("fc.weight", "weight", "int8", (4, 4), scale=[0.2] * 4),
            TensorSpec("fc.bias", "bias", "float32", (4,)),
        ]
    )
    raw = layout.total_nbytes
    deltas = [
        {
            "superclass": n,
            "index": i,
            "file": "deltas/{}.zst".format(n),
            "codec": "zstd",
            "raw_size": raw,
            "stored_size": 100 + i,
            "sha256": sha256_bytes(n.encode()),
        }
        for i, n in enumerate(("a", "b"))
    ]
    return {
        "schema": M.SCHEMA,
        "toolchain_version": "0",
        "head_width": 4,
        "not_mine": True,
        "hierarchy": {
            "superclasses": [{"name": "a", "subclasses": ["x", "y", "z"]}, {"name": "b", "subclasses": ["u/v", "w"]}]
        },
        "input": {
            "name": "input",
            "shape": [1, 8, 8],
            "layout": "NCHW",
            "dtype": "float32",
            "scale": 1 / 255,
            "mean": [0.5],
            "std": [0.25],
            "color": "gray",
        },
        "output": {"name": "logits"},
        "refit": layout.to_dict(),
        "deltas": deltas,
        "engines": [],
        "base": {"file": "base.onnx", "size": 4096, "sha256": sha256_bytes(b"base")},
        "samples": {"file": "samples.npy", "size": 2048, "sha256": sha256_bytes(b"s"), "shape": [2, 1, 8, 8]},
        "routing": {"gate": 0.8, "k": 2, "beta": 0.75, "chosen_on": "validation (100 images)", "learned": _learned()},
    }


def _learned() -> dict:
    """routing.learned: a gate, and a combiner for (a, b): [log p_super (2), a (3+1), b (2+1)] -> 5 classes."""

    def dense(n_in: int, n_out: int) -> dict:
        w = [[((i * n_in + j) % 7 - 3) / 4 for j in range(n_in)] for i in range(n_out)]
        return {"mean": [0.0] * n_in, "std": [1.0] * n_in, "layers": [{"weight": w, "bias": [0.1] * n_out}]}

    return {"gate": dense(6, 1), "threshold": 0.5, "pairs": [{"a": 0, "b": 1, "model": dense(9, 5)}]}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=8,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


PATHS = list(_paths(synthetic_manifest()))[1:]


def fuzz_manifest(edits, delete):
    COUNTS["manifest"] += 1
    m = synthetic_manifest()
    for path, value in edits:
        obj = m
        try:
            for k in path[:-1]:
                obj = obj[k]
            if delete and isinstance(obj, dict):
                obj.pop(path[-1], None)
            else:
                obj[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        M.parse(M.loads(json.dumps(m).encode()))
    except (FieldError, M.ManifestError):
        pass


def fuzz_manifest_bytes(data):
    COUNTS["manifest_bytes"] += 1
    try:
        M.parse(M.loads(data))
    except (FieldError, M.ManifestError):
        pass


def mutate(data: bytes, edits, cut) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b[: cut % (len(b) + 1)] if cut is not None else b)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6)
CUT = st.none() | st.integers(0, 1 << 16)
ENCODED = {}


def _encoded(codec):
    if codec not in ENCODED:
        ENCODED[codec] = codecs.encode(codec, RAW)
    return ENCODED[codec]


def fuzz_codec(codec, edits, cut, size):
    COUNTS["codec_" + codec] += 1
    data = mutate(_encoded(codec), edits, cut)
    try:
        out = codecs.decode(codec, data, size)
        assert len(out) == size
    except CodecError:
        pass


def fuzz_codec_bytes(codec, data):
    COUNTS["codec_bytes"] += 1
    try:
        codecs.decode(codec, data, SIZE)
    except CodecError:
        pass


def _bundle_tar() -> bytes:
    m = synthetic_manifest()
    files = {"base.onnx": 4096, "deltas/a.zst": 100, "deltas/b.zst": 101, "samples.npy": 2048}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [("manifest.json", json.dumps(m).encode())] + [(n, bytes(s)) for n, s in files.items()]:
            info = tarfile.TarInfo("bundle/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TAR = _bundle_tar()


def fuzz_tar(edits, cut, gz):
    COUNTS["tar"] += 1
    data = mutate(TAR, edits, cut)
    if gz:
        import gzip

        data = gzip.compress(data, compresslevel=1)
    tmp = tempfile.mkdtemp(prefix="edgetool-fuzz-")
    try:
        path = os.path.join(tmp, "b.tar")
        with open(path, "wb") as f:
            f.write(data)
        dest = os.path.join(tmp, "out")
        os.mkdir(dest)
        try:
            root = safetar.unpack(path, dest)
            assert os.path.realpath(root).startswith(os.path.realpath(dest))
        except BundleError:
            pass
    finally:
        shutil.rmtree(tmp)


def _png(mode_array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mode_array).save(buf, "PNG")
    return buf.getvalue()


IMAGES = {
    "png": _png(np.arange(64, dtype=np.uint8).reshape(8, 8)),
    "png16": _png((np.arange(64, dtype=np.uint16) * 999).reshape(8, 8)),
    "npy": None,
}


def _npy():
    buf = io.BytesIO()
    np.save(buf, np.zeros((8, 8, 3), np.uint8))
    return buf.getvalue()


IMAGES["npy"] = _npy()


def fuzz_image(kind, edits, cut):
    COUNTS["image_" + kind] += 1
    data = mutate(IMAGES[kind], edits, cut)
    fd, path = tempfile.mkstemp(suffix=".npy" if kind == "npy" else ".png", prefix="edgetool-fuzz-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            a = load_image(path)
            assert a.dtype == np.uint8 and a.ndim in (2, 3) and a.size > 0
        except UsageError:
            pass
    finally:
        os.remove(path)


def fuzz_protobuf(data):
    COUNTS["protobuf"] += 1
    for fn in (graph_io, read_initializers):
        try:
            fn(data)
        except ValueError:
            pass


ODD = st.sampled_from(["", "a", "/", "..", "\x00", 0, -1, 1.5])
STRATEGIES = {
    "manifest": (
        fuzz_manifest,
        (st.lists(st.tuples(st.sampled_from(PATHS), JSON | ODD), min_size=1, max_size=3), st.booleans()),
    ),
    "manifest_bytes": (fuzz_manifest_bytes, (st.binary(max_size=512),)),
    "codec": (fuzz_codec, (st.sampled_from(["zstd", "7z"]), EDITS, CUT, st.integers(0, 2 * SIZE))),
    "codec_bytes": (fuzz_codec_bytes, (st.sampled_from(["zstd", "7z"]), st.binary(max_size=256))),
    "tar": (fuzz_tar, (EDITS, CUT, st.booleans())),
    "image": (fuzz_image, (st.sampled_from(sorted(IMAGES)), EDITS, CUT)),
    "protobuf": (fuzz_protobuf, (st.binary(max_size=256),)),
}
TARGETS = {name: fn for name, (fn, _) in STRATEGIES.items()}


def run(name: str, examples: int, seed=None):
    """Run target *name* for *examples* generated cases; hypothesis raises on the first failure."""
    body, strategies = STRATEGIES[name]

    def prop(args):  # a fresh function per run: hypothesis attaches settings to the function itself
        body(*args)

    fn = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
    )(given(st.tuples(*strategies))(prop))
    if seed is not None:
        from hypothesis import seed as with_seed

        fn = with_seed(seed)(fn)
    fn()
