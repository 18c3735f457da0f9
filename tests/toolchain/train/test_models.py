import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from edgetool.toolchain.train import models as M  # noqa: E402
from edgetool.toolchain.train import qat as Q  # noqa: E402


@pytest.mark.parametrize("arch,tv", [("resnet18", "resnet18"), ("resnet34", "resnet34"), ("resnet50", "resnet50")])
def test_torchvision_weights_load_exactly(arch, tv):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, tv)(weights=None, num_classes=7).eval()
    # non-trivial BN statistics
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = M.build(arch, 3, 7).eval()
    M.load_torchvision_weights(ours, ref.state_dict())
    ours.fc.load_state_dict(ref.fc.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["resnet8", "resnet20", "resnet18", "resnet50"])
def test_op_list_reproduces_the_float_model(arch):
    torch.manual_seed(0)
    m = M.build(arch, 3, 5).eval()
    x = torch.randn(2, 3, 32, 32)
    net = Q.QATNet(*m.to_ir(), m.config).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), m(x), rtol=1e-5, atol=1e-5)
        net.init_weight_scales()
        net.calibrate([x])
        net.quantize = True
        q = net(x)
    assert q.shape == (2, 5) and torch.isfinite(q).all()
