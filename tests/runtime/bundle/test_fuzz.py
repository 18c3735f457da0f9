"""Fuzzing in CI: 10,500 generated cases (CI below) over the manifest model, the codecs, the tar reader, the image
loaders and the protobuf reader; each target must run at least 90% of its cases, and only the project's own error
types may come out (benchmarks/fuzz_long.py runs the same targets for 200,000+ cases)."""

import os
import tempfile

import pytest

pytest.importorskip("hypothesis")

import fuzz_targets as F  # noqa: E402
from edgetool.runtime.bundle import manifest as M  # noqa: E402
from edgetool.runtime.bundle import safetar  # noqa: E402

CI = {
    "manifest": 2000,
    "manifest_bytes": 2000,
    "codec": 2000,
    "codec_bytes": 500,
    "tar": 1500,
    "image": 1500,
    "protobuf": 1000,
}


def test_seeds_are_valid_inputs(tmp_path):
    m = M.parse(F.synthetic_manifest())
    assert m.routing.beta == 0.75 and m.not_mine  # the edits reach the routing and not_mine fields too
    assert m.routing.learned is not None and list(m.routing.learned.pairs) == [(0, 1)]
    path = tmp_path / "b.tar"
    path.write_bytes(F.TAR)
    os.mkdir(str(tmp_path / "out"))
    assert os.path.isfile(os.path.join(safetar.unpack(str(path), str(tmp_path / "out")), "manifest.json"))


@pytest.mark.parametrize("name", sorted(CI))
def test_fuzz(name):
    before = sum(v for k, v in F.COUNTS.items() if k.startswith(name.split("_")[0]))
    leftovers = set(os.listdir(tempfile.gettempdir()))
    F.run(name, CI[name])
    ran = sum(v for k, v in F.COUNTS.items() if k.startswith(name.split("_")[0])) - before
    assert ran >= CI[name] * 0.9  # hypothesis may stop early only when it has exhausted the space
    assert {e for e in os.listdir(tempfile.gettempdir()) if e.startswith("edgetool-fuzz-")} <= leftovers
