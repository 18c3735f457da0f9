"""Fault injection for sparse deltas, which a switch scatter-adds into the served weights in place."""

import os
import shutil

import numpy as np
import pytest

from edgetool.runtime.bundle import codecs, sparse_codec
from edgetool.runtime.backends.base import BASE
from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.errors import SwitchError

pytest.importorskip("onnxruntime")
from edgetool.runtime.backends.ort import OrtBackend  # noqa: E402
from test_faults import _check_failed_step, _served  # noqa: E402


def _recoded(src, dst, codec, keep=0.05, seed=0):
    """A copy of bundle *src* whose deltas keep *keep* of their int8 entries (and every float
    entry), stored by *codec*: the same sparse subclass networks under any codec."""
    import json

    from edgetool.runtime.bundle.weights import sha256_bytes

    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    with Bundle.open(src) as b:
        manifest = json.loads(json.dumps(b.manifest))
        n = b.layout.int8_nbytes
        for k, entry in enumerate(manifest["deltas"]):
            raw = b.read_delta(k).copy()
            raw[:n][rng.random(n) >= keep] = 0
            data = codecs.encode(codec, raw.tobytes())
            os.remove(os.path.join(dst, entry["file"]))
            entry["file"] = "deltas/{}.{}".format(k, codecs.EXTENSIONS[codec])
            with open(os.path.join(dst, entry["file"]), "wb") as f:
                f.write(data)
            entry.update(codec=codec, stored_size=len(data), sha256=sha256_bytes(data), raw_sha256=sha256_bytes(raw))
    with open(os.path.join(dst, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return dst


@pytest.fixture(scope="module")
def sparse_bundles(tiny_bundle, tmp_path_factory):
    """(sparse, zstd): the tiny run's base with sparse subclass networks (5% of codes changed),
    one bundle stored by the sparse codec (applied in place) and one by zstd (applied dense)."""
    root = tmp_path_factory.mktemp("sparse")
    return _recoded(tiny_bundle, str(root / "sparse"), "sparse"), _recoded(tiny_bundle, str(root / "zstd"), "zstd")


@pytest.fixture()
def served_sparse(sparse_bundles):
    """The sparse-codec bundle, served; the reference logits come from the zstd bundle (dense apply)."""
    b, x, logits = _served(*sparse_bundles)
    with OrtBackend(b) as be:
        yield be, x, logits
    b.close()


@pytest.mark.parametrize("step", ["read", "verify", "sparse-decode", "scatter-part", "scatter-done"])
def test_failed_sparse_switch_step_keeps_previous_network_bit_exact(served_sparse, monkeypatch, step):
    """The same guarantees when the delta is scatter-added in place (sparse codec)."""
    be, x, logits = served_sparse
    assert be.bundle.deltas[0]["codec"] == "sparse"
    assert isinstance(be.bundle.read_delta(1, sparse=True), sparse_codec.SparseDelta)
    _check_failed_step(served_sparse, monkeypatch, step)
    be.switch(BASE)  # after the restores, every network is exact again, in every order
    for k in [0, 1, BASE, 1, 0]:
        be.switch(k)
        np.testing.assert_array_equal(be.infer(x), logits[k])


def test_sparse_in_place_weights_equal_the_dense_apply(sparse_bundles):
    """Backend level: the buffer the session reads holds the same bytes, switch after switch."""
    with Bundle.open(sparse_bundles[0]) as bs, Bundle.open(sparse_bundles[1]) as bz:
        with OrtBackend(bs) as sparse, OrtBackend(bz) as dense:
            for k in [0, 1, BASE, 1, 0, 0, BASE, BASE, 1]:
                sparse.switch(k, force=True)
                dense.switch(k, force=True)
                assert sparse.weights.tobytes() == dense.weights.tobytes(), k
                assert (k == BASE) == (sparse.weights.tobytes() == sparse.base.tobytes())


def test_sparse_delta_changed_on_disk_is_never_applied(served_sparse):
    be, x, logits = served_sparse
    be.switch(0)
    be.switch(1)  # both verified once
    path = os.path.join(be.bundle.root, be.bundle.deltas[0]["file"])
    with open(path, "r+b") as f:  # same size, the last byte of the values frame flipped, in place
        f.seek(-1, 2)
        byte = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    try:
        with pytest.raises(SwitchError, match="sha256 mismatch"):
            be.switch(0)
        assert be.current == 1
        np.testing.assert_array_equal(be.infer(x), logits[1])
    finally:
        with open(path, "r+b") as f:
            f.seek(-1, 2)
            f.write(byte)
    be.switch(0)
    np.testing.assert_array_equal(be.infer(x), logits[0])
