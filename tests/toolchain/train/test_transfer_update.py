"""A pretrained EfficientNet-Lite0 retrained on more photos as an update of its deployed bundle: only
the tail's tensors change, the trunk and the samples are reused, and the device's rebuilt bundle
classifies as the full bundle of the new weights."""

import json
import os

import pytest

from test_transfer import CALTECH, CLASSES, photos, transfer_run  # noqa: F401  (fixtures; they skip without data)

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def more_photos(photos, tmp_path_factory):  # noqa: F811
    """The same test photos, and four more training photos per class."""
    root = tmp_path_factory.mktemp("more")
    os.symlink(photos / "test", root / "test")
    for c in CLASSES:
        files = sorted(os.listdir(os.path.join(CALTECH, c)))
        os.makedirs(root / "train" / c)
        for f in files[:12] + files[16:20]:
            os.symlink(os.path.join(CALTECH, c, f), root / "train" / c / f)
    return root


def ok(proc):
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return proc


def test_a_tail_retrain_ships_only_the_tail(transfer_run, more_photos, tmp_path, run_cli):  # noqa: F811
    full1, update, full2, run2 = (tmp_path / n for n in ("full1", "update", "full2", "run2"))
    ok(run_cli("export", transfer_run, "--out", full1, "--release", "10"))
    ok(run_cli("train", run2, "--update-of", transfer_run, "--data", more_photos, "--qat-epochs", "2"))
    m = json.loads((run2 / "metrics.json").read_text())
    assert m["qat"]["update_of"] == str(transfer_run) and 0 <= m["qat"]["test_accuracy"] <= 1
    ok(run_cli("export", run2, "--update-of", full1, "--out", update, "--release", "20"))
    ok(run_cli("export", run2, "--out", full2, "--release", "20"))
    u = json.loads((update / "manifest.json").read_text())
    changed = u["base_delta"]["changed"]
    assert changed and all(t.startswith(("blocks.15.", "head.", "fc.")) for t in changed), changed
    assert sorted(u["reused"]) == ["deltas/all.zst", "samples.npy"] and u["files"] == []
    full = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(full2) for f in fs)
    shipped = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(update) for f in fs)
    assert shipped < full / 10, (shipped, full)

    device = tmp_path / "device"
    ok(run_cli("target", "config", device, "--accept-unsigned"))
    for bundle in (full1, update):
        ok(run_cli("deploy", bundle, "--to", device, "--device-profile", "cpu", "--batch", "2"))
    current = device / "current"
    assert (current / "base.onnx").read_bytes() == (full2 / "base.onnx").read_bytes()
    tests = sorted(str(p) for p in (more_photos / "test").rglob("*.jpg"))
    got = ok(run_cli("classify", current, *tests, "--json")).stdout
    assert got == ok(run_cli("classify", full2, *tests, "--json")).stdout
