"""`train --pretrained imagenet`: torchvision's published weights from torch's cache, offline."""

import os

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

TINY = ["--modes", "flat", "--epochs", "1", "--lr", "0", "--limit-train", "64", "--limit-test", "32", "--batch", "32"]


def test_imagenet_weights_come_from_torchs_cache(run_cli, tmp_path):
    from edgetool.toolchain.train.pretrained import cache_path, imagenet_weights

    home = tmp_path / "torch-home"
    ref = torchvision.models.resnet18(weights=None).state_dict()  # made here: the test stays offline
    env = {"TORCH_HOME": str(home)}
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        path = cache_path(imagenet_weights("resnet18"))
    finally:
        os.environ.pop("TORCH_HOME") if old is None else os.environ.update(TORCH_HOME=old)
    assert path == str(home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    os.makedirs(os.path.dirname(path))
    torch.save(ref, path)
    proc = run_cli("train", tmp_path / "run", "--arch", "resnet18", "--pretrained", "imagenet", *TINY, env=env)
    assert proc.returncode == 0, proc.stderr
    flat = torch.load(tmp_path / "run" / "flat.pt", weights_only=True)["state_dict"]
    # lr 0: the trunk is the file's (the grayscale stem and the head have other shapes and are not taken)
    assert torch.equal(flat["stages.0.0.conv1.conv.weight"], ref["layer1.0.conv1.weight"])
    assert torch.equal(flat["stages.3.1.conv2.conv.weight"], ref["layer4.1.conv2.weight"])


def test_imagenet_weights_offline_with_an_empty_cache_is_one_line(run_cli, tmp_path):
    env = {
        "TORCH_HOME": str(tmp_path / "empty"),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    proc = run_cli("train", tmp_path / "run", "--arch", "resnet18", "--pretrained", "imagenet", *TINY, env=env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    where = str(tmp_path / "empty" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    assert len(errors) == 1 and "cannot download the ImageNet weights of resnet18" in errors[0], proc.stderr
    assert errors[0].endswith("put the file resnet18-f37072fd.pth at " + where)


def test_an_architecture_without_imagenet_weights_is_refused_before_any_work(run_cli, tmp_path):
    proc = run_cli("train", tmp_path / "run", "--arch", "resnet8", "--pretrained", "imagenet", *TINY)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1
    assert "no ImageNet weights are published for resnet8" in proc.stderr
    missing = run_cli("train", tmp_path / "run2", "--pretrained", tmp_path / "nope.pth", *TINY)
    assert missing.returncode != 0 and "no such pretrained checkpoint" in missing.stderr
    assert not (tmp_path / "run" / "flat.pt").exists()
