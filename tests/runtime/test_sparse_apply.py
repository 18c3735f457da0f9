"""Sparse deltas applied in place (scatter-add into the int8 region) give the same bits as the
dense apply, including wrap-around; bad or out-of-range positions are refused before any write."""

import numpy as np
import pytest

from edgetool.runtime.bundle import codecs, packed, sparse_codec
from edgetool.runtime.errors import CodecError
from edgetool.runtime.bundle.sparse_codec import HEADER, SparseDelta
from edgetool.runtime.trt.delta_apply import stage_delta
from edgetool.runtime.bundle.packed import PackedWeights, scatter_add
from edgetool.runtime.bundle.weights import PackedLayout, TensorSpec


def layout():
    return PackedLayout.build(
        [
            TensorSpec("c1.weight", "weight", "int8", (32, 16, 3, 3), scale=[0.1] * 32),
            TensorSpec("c1.scale", "scale", "float32", (32,)),
            TensorSpec("c1.bias", "bias", "float32", (32,)),
            TensorSpec("c2.weight", "weight", "int8", (64, 32, 3, 3), scale=[0.05] * 64),
            TensorSpec("fc.weight", "weight", "int8", (10, 64), scale=[0.5] * 10),
            TensorSpec("fc.bias", "bias", "float32", (10,)),
        ]
    )


def networks(lay, n, density, seed=0):
    """The packed base and *n* packed subclass networks, each with *density* of its codes moved."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for t in lay.tensors:
        if t.dtype == "int8":
            arrays[t.name] = rng.integers(-128, 128, t.shape, dtype=np.int16).astype(np.int8)
        else:
            arrays[t.name] = rng.standard_normal(t.shape).astype(np.float32)
    base = lay.pack(arrays)
    subs = []
    for _ in range(n):
        sub = {}
        for t in lay.tensors:
            a = arrays[t.name]
            if t.dtype == "int8":
                moved = rng.random(a.shape) < density
                step = rng.choice([-3, -1, 1, 3], size=a.shape)
                # int8 arithmetic on purpose: codes near -128 and 127 wrap, as stored deltas do
                sub[t.name] = np.where(moved, (a.astype(np.int16) + step).astype(np.int8), a).astype(np.int8)
            else:
                sub[t.name] = a + 0.01 * rng.standard_normal(a.shape).astype(np.float32)
        subs.append(lay.pack(sub))
    return base, subs


def as_sparse(delta):
    out = sparse_codec.decode_sparse(sparse_codec.encode(delta.tobytes()), delta.size)
    assert isinstance(out, SparseDelta)
    return out


@pytest.mark.parametrize("density", [0.0, 0.002, 0.1, 0.24])
@pytest.mark.parametrize("fast", [True, False], ids=["add.at", "gather-scatter"])
def test_in_place_sparse_equals_dense_bit_for_bit(density, fast, monkeypatch):
    monkeypatch.setattr(packed, "_ADD_AT_FAST", fast)
    lay = layout()
    base, subs = networks(lay, 3, density)
    dense = [lay.make_delta(base, s) for s in subs]
    sparse = [as_sparse(d) for d in dense]
    w = PackedWeights(lay, base)
    # from the base (int8 region left as is), between subclasses (rewritten), dense in between, back
    for step in [0, 1, 2, ("dense", 1), 0, None, 2, None, None, 1]:
        if step is None:
            w.set(None)
            want = base
        elif isinstance(step, tuple):
            w.set(dense[step[1]])
            want = subs[step[1]]
        else:
            w.set(sparse[step])
            want = lay.apply_delta(base, dense[step])
            assert want.tobytes() == subs[step].tobytes()
        assert w.buf.tobytes() == want.tobytes(), step
    assert w.buf is not base and base.tobytes() == networks(lay, 3, density)[0].tobytes()  # base untouched


def test_wrap_around_at_both_ends():
    lay = layout()
    base = lay.empty()
    base[:4] = np.array([127, -128, 5, -1], dtype=np.int8).view(np.uint8)
    delta = lay.empty()
    delta[:4] = [1, 255, 0, 2]  # +1, -1, unchanged, +2
    w = PackedWeights(lay, base)
    w.set(as_sparse(delta))
    assert list(w.buf[:4].view(np.int8)) == [-128, 127, 5, 1]
    assert w.buf.tobytes() == lay.apply_delta(base, delta).tobytes()


def test_float_region_entries_add_as_float32():
    lay = layout()
    base, subs = networks(lay, 1, 0.0, seed=3)  # only the float tensors differ
    delta = lay.make_delta(base, subs[0])
    sp = as_sparse(delta)
    k = sp.split(lay.int8_nbytes)
    assert not sp.values[:k].any() and sp.values[k:].any()  # int8 region: only the codec's filler entries
    w = PackedWeights(lay, base)
    w.set(sp)
    assert w.buf.tobytes() == subs[0].tobytes()


def test_sparse_delta_refuses_bad_positions():
    with pytest.raises(CodecError, match="zero gap"):
        SparseDelta(100, np.array([3, 0, 2], np.uint8), np.array([1, 1, 1], np.uint8))
    with pytest.raises(CodecError, match="beyond the 10 declared bytes"):
        SparseDelta(10, np.array([5, 6], np.uint8), np.array([1, 1], np.uint8))
    with pytest.raises(CodecError, match="one length"):
        SparseDelta(10, np.array([1, 2], np.uint8), np.array([1], np.uint8))
    with pytest.raises(CodecError, match="one length"):
        SparseDelta(10, np.array([1, 2], np.int64), np.array([1, 1], np.uint8))
    ok = SparseDelta(10, np.array([10], np.uint8), np.array([7], np.uint8))  # the last byte exactly
    assert list(ok.positions) == [9] and ok.dense()[9] == 7


def test_codec_blobs_with_bad_positions_are_refused():
    zstd = pytest.importorskip("zstandard")
    zc = zstd.ZstdCompressor()

    def blob(total, gaps, values):
        g, v = zc.compress(bytes(gaps)), zc.compress(bytes(values))
        return HEADER.pack(b"EDSP", 1, 1, total, len(gaps), len(g)) + g + v

    assert codecs.decode("sparse", blob(8, [2, 3], [1, 1]), 8).tolist() == [0, 1, 0, 0, 1, 0, 0, 0]
    for bad, message in (
        (blob(8, [2, 0], [1, 1]), "zero gap"),  # position 1 given twice
        (blob(8, [5, 4], [1, 1]), "beyond the 8 declared bytes"),  # position 8 of 0..7
        (blob(8, [255, 255], [0, 1]), "beyond the 8 declared bytes"),
    ):
        for decode in (codecs.decode, codecs.decode_delta):
            with pytest.raises(CodecError, match=message):
                decode("sparse", bad, 8)


def test_scatter_add_refuses_out_of_range_before_writing():
    region = np.arange(16, dtype=np.uint8)
    before = region.copy()
    for pos in ([3, 16], [-1, 2]):
        with pytest.raises(ValueError, match="outside the 16-byte region"):
            scatter_add(region, np.array(pos, np.int64), np.array([1, 1], np.uint8))
        assert region.tobytes() == before.tobytes()
    with pytest.raises(ValueError, match="uint8"):
        scatter_add(region, np.array([1], np.int64), np.array([1], np.int16))
    scatter_add(region, np.array([0, 15], np.int64), np.array([255, 1], np.uint8))
    assert region[0] == 255 and region[15] == 16


def test_wrong_size_sparse_delta_is_refused_and_leaves_the_weights():
    lay = layout()
    base, subs = networks(lay, 1, 0.1)
    w = PackedWeights(lay, base)
    w.set(as_sparse(lay.make_delta(base, subs[0])))
    before = w.buf.tobytes()
    small = SparseDelta(lay.total_nbytes - 256, np.array([1], np.uint8), np.array([1], np.uint8))
    with pytest.raises(ValueError, match="the layout has"):
        w.set(small)
    assert w.buf.tobytes() == before


def test_failure_part_way_is_rewritten_whole_next_time(monkeypatch):
    """A scatter that dies after writing leaves the buffer marked unknown; the next set is exact."""
    lay = layout()
    base, subs = networks(lay, 2, 0.1)
    sp = [as_sparse(lay.make_delta(base, s)) for s in subs]
    w = PackedWeights(lay, base)
    w.set(sp[0])

    def dies(region, positions, values):
        region[positions[: positions.size // 2]] += values[: positions.size // 2]
        raise RuntimeError("injected fault in the scatter")

    monkeypatch.setattr(packed, "scatter_add", dies)
    with pytest.raises(RuntimeError):
        w.set(sp[1])
    assert not w.int8_is_base
    monkeypatch.undo()
    w.set(sp[0])  # what a backend's restore does
    assert w.buf.tobytes() == subs[0].tobytes()
    monkeypatch.setattr(packed, "scatter_add", dies)
    with pytest.raises(RuntimeError):
        w.set(sp[1])
    monkeypatch.undo()
    w.set(None)
    assert w.buf.tobytes() == base.tobytes()


def reference_positions(gaps):
    return np.cumsum(gaps.astype(np.int64)) - 1


@pytest.mark.parametrize("step", [1, 2, 7, 1000, 1 << 20])
def test_chunked_positions_carry_across_chunks(step):
    lay = layout()
    base, subs = networks(lay, 1, 0.1)
    sp = as_sparse(lay.make_delta(base, subs[0]))
    buf = np.empty(step, np.int64)
    got = [(pos.copy(), values) for pos, values in sp.chunks(buf)]
    assert all(p.size <= step for p, _ in got)
    assert np.concatenate([p for p, _ in got]).tobytes() == reference_positions(sp.gaps).tobytes()
    assert np.concatenate([v for _, v in got]).tobytes() == sp.values.tobytes()
    assert sp.positions.tobytes() == reference_positions(sp.gaps).tobytes()
    assert sp.nbytes == sp.gaps.nbytes + sp.values.nbytes  # the positions are never held
    with pytest.raises(ValueError, match="int64"):
        next(sp.chunks(np.empty(4, np.int32)))


@pytest.mark.parametrize("chunk", [3, 64, 1 << 18])
def test_chunked_apply_equals_dense_at_every_chunk_size(chunk, monkeypatch):
    """Chunks that end inside the int8 region, exactly at its end and across it into the float region."""
    monkeypatch.setattr(packed, "CHUNK", chunk)
    lay = layout()
    base, subs = networks(lay, 3, 0.1, seed=5)
    dense = [lay.make_delta(base, s) for s in subs]
    w = PackedWeights(lay, base)
    for i in (0, 2, 1, 1):
        w.set(as_sparse(dense[i]))
        assert w.buf.tobytes() == subs[i].tobytes()
    buffer = w._chunk
    assert buffer is not None and buffer.size <= chunk
    w.set(None)
    w.set(as_sparse(dense[0]))
    assert w._chunk is buffer  # one buffer for every switch: nothing allocated in proportion to the delta
    assert w.buf.tobytes() == subs[0].tobytes()
    w.set(None)
    assert w.buf.tobytes() == base.tobytes()


def test_gap_sum_is_exact_past_one_uint32_sum():
    gaps = np.full((1 << 24) + 5, 255, np.uint8)
    assert sparse_codec.gap_sum(gaps) == 255 * gaps.size  # > 2**32: a single uint32 sum would wrap
    with pytest.raises(CodecError, match="beyond"):
        SparseDelta(255 * gaps.size - 1, gaps, np.zeros_like(gaps))


def test_staging_buffer_holds_the_whole_delta():
    """The TensorRT device path stages a sparse delta in the pinned buffer its H2D copy reads."""
    lay = layout()
    base, subs = networks(lay, 1, 0.1)
    delta = lay.make_delta(base, subs[0])
    staging = np.full(lay.total_nbytes, 0xAB, dtype=np.uint8)  # the previous delta's leftovers
    stage_delta(staging, as_sparse(delta))
    assert staging.tobytes() == delta.tobytes()
    stage_delta(staging, delta)
    assert staging.tobytes() == delta.tobytes()
    with pytest.raises(ValueError, match="must be uint8"):
        stage_delta(staging, delta[:-1])
