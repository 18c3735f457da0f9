import numpy as np
import pytest

from edgetool.runtime.bundle import codecs
from edgetool.runtime.errors import CodecError, UsageError
from edgetool.runtime.bundle.weights import ALIGN, PackedLayout, TensorSpec


@pytest.mark.parametrize("codec", ["7z", "zstd", "raw"])
def test_codec_roundtrip(codec):
    rng = np.random.default_rng(0)
    raw = (rng.integers(-3, 4, 50_000) % 256).astype(np.uint8).tobytes()
    data = codecs.encode(codec, raw)
    assert codecs.decode(codec, data, len(raw)) == raw
    if codec != "raw":
        assert len(data) < len(raw)


def test_7z_is_a_real_7zip_archive():
    data = codecs.encode("7z", b"\x00\x01" * 100)
    assert data[:6] == b"7z\xbc\xaf\x27\x1c"


@pytest.mark.parametrize("codec", ["7z", "zstd"])
def test_codec_rejects_garbage(codec):
    data = bytearray(codecs.encode(codec, bytes(range(256)) * 40))
    data = bytes(data[: len(data) // 2])
    with pytest.raises(CodecError):
        codecs.decode(codec, data, 256 * 40)


def test_unknown_codec():
    with pytest.raises(UsageError, match="unknown codec"):
        codecs.encode("lz4", b"")


def make_layout():
    return PackedLayout.build(
        [
            TensorSpec("a.weight", "weight", "int8", (8, 3, 3, 3), scale=[0.1] * 8),
            TensorSpec("a.bias", "bias", "float32", (8,)),
            TensorSpec("fc.weight", "weight", "int8", (4, 8), scale=[0.5, 0.25, 1.0, 2.0]),
            TensorSpec("fc.bias", "bias", "float32", (4,)),
        ]
    )


def test_layout_alignment_and_regions():
    lay = make_layout()
    assert [t.name for t in lay.tensors] == ["a.weight", "fc.weight", "a.bias", "fc.bias"]
    for t in lay.tensors:
        assert t.offset % ALIGN == 0
        if t.dtype == "int8":
            assert t.offset + t.nbytes <= lay.int8_nbytes
        else:
            assert t.offset >= lay.int8_nbytes
    assert lay.total_nbytes % ALIGN == 0
    assert PackedLayout.from_dict(lay.to_dict()).to_dict() == lay.to_dict()


def random_arrays(lay, rng):
    out = {}
    for t in lay.tensors:
        if t.dtype == "int8":
            out[t.name] = rng.integers(-127, 128, t.shape).astype(np.int8)
        else:
            out[t.name] = rng.normal(size=t.shape).astype(np.float32)
    return out


def test_delta_wraparound_is_bit_exact():
    lay = make_layout()
    rng = np.random.default_rng(1)
    base, sub = random_arrays(lay, rng), random_arrays(lay, rng)
    # extremes that overflow int8 arithmetic unless the add wraps
    base["a.weight"].flat[:4] = [127, -127, 127, -128]
    sub["a.weight"].flat[:4] = [-127, 127, -128, 127]
    bp, sp = lay.pack(base), lay.pack(sub)
    delta = lay.make_delta(bp, sp)
    assert delta.dtype == np.uint8
    v = lay.views(delta)
    assert v["a.weight"].view(np.uint8).flat[0] == (-127 - 127) % 256
    out = lay.views(lay.apply_delta(bp, delta))
    for name in ("a.weight", "fc.weight"):
        np.testing.assert_array_equal(out[name], sub[name])
    for name in ("a.bias", "fc.bias"):
        np.testing.assert_allclose(out[name], sub[name], rtol=0, atol=1e-6)


def test_views_share_memory_and_reject_bad_buffers():
    lay = make_layout()
    buf = lay.empty()
    lay.views(buf)["fc.weight"][0, 0] = -5
    assert buf[lay.by_name["fc.weight"].offset] == 251
    with pytest.raises(ValueError):
        lay.views(np.zeros(lay.total_nbytes - 1, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        lay.pack({**random_arrays(lay, np.random.default_rng(0)), "a.bias": np.zeros(9, np.float32)})


def test_dequantize_uses_axis0_scales():
    lay = make_layout()
    arrays = random_arrays(lay, np.random.default_rng(2))
    deq = lay.dequantize(lay.pack(arrays))
    expect = arrays["fc.weight"].astype(np.float32) * np.array([0.5, 0.25, 1.0, 2.0], np.float32)[:, None]
    np.testing.assert_array_equal(deq["fc.weight"], expect)


def test_changed_tensors():
    lay = make_layout()
    rng = np.random.default_rng(3)
    a = random_arrays(lay, rng)
    b = {k: v.copy() for k, v in a.items()}
    b["fc.weight"][1, 1] += 1
    d = lay.make_delta(lay.pack(a), lay.pack(b))
    assert lay.changed_tensors([d]) == ["fc.weight"]


def test_layout_rejects_overlap():
    d = make_layout().to_dict()
    d["tensors"][1]["offset"] = 0
    with pytest.raises(ValueError):
        PackedLayout.from_dict(d)
