"""The sparse delta codec: exact round trips at every density, and one clear error for bad input."""

import numpy as np
import pytest

from edgetool.runtime.bundle import codecs
from edgetool.runtime.errors import CodecError
from edgetool.runtime.bundle.sparse_codec import HEADER


@pytest.mark.parametrize("density", [0.0, 0.0005, 0.1, 0.3, 1.0])
def test_round_trip(density):
    rng = np.random.default_rng(1)
    a = np.zeros(300_001, dtype=np.uint8)
    mask = rng.random(a.size) < density
    a[mask] = rng.integers(1, 256, int(mask.sum()), dtype=np.uint8)
    a[-1] = 7  # a change at the very end, after a long gap at low density
    data = codecs.encode("sparse", a.tobytes())
    out = codecs.decode("sparse", data, a.size)
    assert bytes(out) == a.tobytes()
    mode = HEADER.unpack_from(data)[2]
    assert mode == (0 if density > 0.25 else 1)
    if 0 < density <= 0.1:
        assert len(data) < len(codecs.encode("zstd", a.tobytes())) * 1.2


def test_corrupt_input_raises_codec_error():
    a = np.zeros(10_000, dtype=np.uint8)
    a[::37] = 3
    data = bytearray(codecs.encode("sparse", a.tobytes()))
    for bad in (
        b"",
        bytes(data[:10]),
        b"XXXX" + bytes(data[4:]),
        bytes(data[:-5]),
        HEADER.pack(b"EDSP", 1, 1, 10, 20, 0) + bytes(data[HEADER.size :]),
    ):
        with pytest.raises(CodecError):
            codecs.decode("sparse", bad, 10_000)
    huge = bytearray(data)
    HEADER.pack_into(huge, 0, b"EDSP", 1, 1, 100, *HEADER.unpack_from(data)[4:])  # positions beyond 100 bytes
    with pytest.raises(CodecError):
        codecs.decode("sparse", bytes(huge), 100)
    with pytest.raises(CodecError, match="header declares 10000 bytes, the layout needs 9999"):
        codecs.decode("sparse", bytes(data), 9_999)  # refused before anything is allocated


def test_sparse_bundle_serves_the_same_deltas(tiny_run, tiny_bundle, tmp_path):
    """A bundle exported with --codec sparse passes the manifest checks and decodes every delta
    to the same bytes as the 7z bundle of the same run."""
    from edgetool.runtime.bundle.reader import Bundle

    out = str(tmp_path / "sparse")
    tiny_run.export(out, codec="sparse")
    with Bundle.open(out) as b, Bundle.open(tiny_bundle) as ref:
        b.verify()
        assert [d["codec"] for d in b.deltas] == ["sparse"] * len(ref.deltas)
        for k in range(len(ref.deltas)):
            assert b.read_delta(k).tobytes() == ref.read_delta(k).tobytes()
