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


def _fake_quant(x, scale, lo, hi):
    """Quantize-dequantize as TensorRT's Q/DQ pair: codes round(x * (1/scale)) clamped to [lo, hi], times scale."""
    return torch.clamp(torch.round(x * (1.0 / scale)), lo, hi) * scale


@pytest.mark.parametrize("arch", ["resnet8", "resnet20"])
def test_fake_quant_equals_a_reference_quantize_dequantize(arch):
    """The QAT network in quantized mode computes what the float network computes with int8 weights (per output
    channel, max |w| / 127; the head one scale at twice its largest weight) and int8 inputs to every conv and fc
    (per tensor, max |x| / 127 over the calibration batch, codes clamped to [-128, 127]), scales derived here."""
    torch.manual_seed(0)
    m = M.build(arch, 3, 5).eval()
    calib, x = torch.randn(4, 3, 32, 32), 1.5 * torch.randn(2, 3, 32, 32)  # x reaches beyond the calibrated range
    net = Q.QATNet(*m.to_ir(), m.config).eval()
    with torch.no_grad():
        net.init_weight_scales()
        net.calibrate([calib])
        net.quantize = True
        q = net(x)
        float_out = m(x)

        layers = [mod for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
        for mod in layers:
            w = mod.weight
            amax = w.abs().reshape(w.shape[0], -1).amax(1)
            if isinstance(mod, torch.nn.Linear):
                amax = torch.full_like(amax, 2 * float(amax.max()))
            scale = (amax / 127).reshape([-1] + [1] * (w.dim() - 1))
            name = next(n for n in net.layers if torch.equal(net.weight(n + ".weight"), w))
            torch.testing.assert_close(net.wscale(name), scale.flatten())
            mod.weight.copy_(_fake_quant(w, scale, -127, 127))
        seen = {}

        def record(mod, inputs):
            seen[mod] = max(seen.get(mod, 0.0), float(inputs[0].abs().max()))

        hooks = [mod.register_forward_pre_hook(record) for mod in layers]
        m(calib)  # calibration: int8 weights, float activations
        for h in hooks:
            h.remove()
        assert sorted(set(seen.values())) == pytest.approx(sorted(127 * s for s in net.act_scales().values()))
        for mod in layers:
            mod.register_forward_pre_hook(lambda mod, inputs: (_fake_quant(inputs[0], seen[mod] / 127, -128, 127),))
        ref = m(x)

    torch.testing.assert_close(q, ref, rtol=1e-4, atol=1e-4)
    assert (q - float_out).abs().max() > 1e-3  # and quantization changed the outputs
    codes = net.int8_codes()
    for name in net.layers:  # the weights it computes with lie on the int8 grid of their scales
        s = net.wscale(name).reshape([-1] + [1] * (codes[name + ".weight"].ndim - 1))
        torch.testing.assert_close(net._fq_w(name), torch.from_numpy(codes[name + ".weight"]).float() * s)
