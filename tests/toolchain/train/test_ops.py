"""The op registry: its schema (defaults, the legacy relu flag, refusals), QATNet's forward pass on
depthwise convs, ReLU6 and asymmetric pads against plain torch, and checkpoints old and new."""

import copy
import io

import pytest

torch = pytest.importorskip("torch")

from edge_ir import NETS, SHAPE, qat_net, reference, tensors  # noqa: E402
from edgetool.runtime.errors import UsageError  # noqa: E402
from edgetool.toolchain.train import models as M  # noqa: E402
from edgetool.toolchain.train import ops as O  # noqa: E402
from edgetool.toolchain.train.qat import QATNet  # noqa: E402


def test_canonical_form_fills_defaults_and_reads_the_legacy_relu_flag():
    conv = O.normalize(dict(op="conv", name="c", x="input", y="t1", k=3, stride=2, pad=1, relu=True, eps=1e-3))
    assert conv == dict(
        op="conv",
        name="c",
        x="input",
        y="t1",
        k=[3, 3],
        stride=[2, 2],
        pad=[1, 1, 1, 1],
        groups=1,
        act="relu",
        eps=1e-3,
    )
    plain = O.normalize(dict(op="conv", name="c", x="input", y="t1", k=[1, 3], pad=[0, 1, 0, 1], relu=False))
    assert (plain["k"], plain["stride"], plain["pad"], plain["act"], plain["eps"]) == (
        [1, 3],
        [1, 1],
        [0, 1, 0, 1],
        None,
        1e-5,
    )
    dw = O.normalize(
        dict(op="conv", name="c", x="t", y="u", k=3, stride=(2, 2), pad=(0, 0, 1, 1), groups=8, act="relu6")
    )
    assert (dw["groups"], dw["act"], dw["stride"], dw["pad"]) == (8, "relu6", [2, 2], [0, 0, 1, 1])
    assert O.normalize(dict(op="add", a="t1", b="t2", y="t3", relu=True))["act"] == "relu"
    assert O.normalize(dict(op="add", a="t1", b="t2", y="t3"))["act"] is None
    assert O.normalize(dict(op="add", a="t1", b="t2", y="t3", relu=False, act=None))["act"] is None
    assert O.normalize(dict(op="maxpool", x="t1", y="t2", k=3, stride=2, pad=1)) == dict(
        op="maxpool", x="t1", y="t2", k=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1]
    )
    # canonical is a fixed point
    assert O.normalize(conv) == conv and O.normalize(dw) == dw


@pytest.mark.parametrize(
    "op,match",
    [
        (dict(op="conv2d", name="c", x="input", y="t"), "unknown op 'conv2d'"),
        (dict(op="conv", name="c", x="input", y="t", k=3, group=8), r"unknown key\(s\) group"),
        (dict(op="conv", name="c", x="input", y="t", k=3, act="swish"), "act must be one of"),
        (dict(op="conv", name="c", x="input", y="t", k=3, relu=True, act="relu6"), "contradicts"),
        (dict(op="conv", name="c", x="input", y="t", k=3, relu=1), "relu must be true or false"),
        (dict(op="conv", name="c", x="input", y="t", k=3, pad=[0, 1, 1]), "pad must be an int or 4 ints"),
        (dict(op="conv", name="c", x="input", y="t", k=[3, 3, 3]), "k must be an int or 2 ints"),
        (dict(op="conv", name="c", x="input", y="t", k=0), "k must be an integer >= 1"),
        (dict(op="conv", name="c", x="input", y="t", k=3, pad=-1), "pad must be an integer >= 0"),
        (dict(op="conv", name="c", x="input", y="t", k=3, groups=0), "groups must be an integer >= 1"),
        (dict(op="conv", name="c", x="input", y="t", k=True), "k must be an integer"),
        (dict(op="conv", name="c", x="input", y="t"), "k .* is missing"),
        (dict(op="conv", name="c", x="input", k=3), "y must be a tensor or layer name"),
        (dict(op="conv", name="c", x="input", y="t", k=3, eps=0), "eps must be a number > 0"),
    ],
)
def test_bad_ops_are_refused_naming_the_op(op, match):
    with pytest.raises(UsageError, match=match):
        O.normalize(op)


def test_op_lists_are_checked_as_graphs():
    ok = [dict(op="gap", x="input", y="t1"), dict(op="fc", name="fc", x="t1", y="logits")]
    assert len(O.normalize_all(ok)) == 2
    with pytest.raises(UsageError, match="reads 't0' before any op writes it"):
        O.normalize_all([dict(op="gap", x="t0", y="t1"), ok[1]])
    with pytest.raises(UsageError, match="written twice"):
        O.normalize_all([ok[0], dict(op="gap", x="t1", y="t1"), ok[1]])
    with pytest.raises(UsageError, match="layer name used twice"):
        O.normalize_all([ok[0], dict(op="fc", name="fc", x="t1", y="t2"), ok[1]])
    with pytest.raises(UsageError, match="'logits'"):
        O.normalize_all(ok[:1])


def test_a_weight_that_does_not_fit_its_conv_is_refused():
    ops, shapes = NETS["mbconv"]()
    t = tensors(ops, shapes)
    t["b1.dw.weight"] = t["b1.dw.weight"][:, :, :2]  # a 2x3 kernel for k=3
    with pytest.raises(UsageError, match=r"b1\.dw.*not \[C_out, C_in/16, 3, 3\]"):
        QATNet(ops, t, {})
    ops, shapes = NETS["mbconv"]()
    ops[2]["groups"] = 5  # 16 output channels in 5 groups
    with pytest.raises(UsageError, match="multiple of groups"):
        QATNet(ops, tensors(ops, shapes), {})


@pytest.mark.parametrize("name", sorted(NETS))
def test_float_forward_equals_plain_torch(name):
    ops, shapes = NETS[name]()
    t = tensors(ops, shapes)
    net = QATNet(ops, t, {}).eval()
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, feats = net(x, features=True)
        want, want_feats = reference(ops, t, x)
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats, want_feats, rtol=1e-5, atol=1e-5)
    assert net.ops == O.normalize_all(ops)  # the net keeps the canonical ops


def test_relu6_and_asymmetric_pads_matter():
    """The reference is sensitive to what is tested: ReLU6's clamp at 6 bites, and the
    asymmetric pad is not the symmetric one."""
    ops, shapes = NETS["mbconv"]()
    t = tensors(ops, shapes)
    t["stem.bn.weight"] = t["stem.bn.weight"] * 20  # stem outputs well beyond 6
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    net = QATNet(ops, t, {}).eval()
    with torch.no_grad():
        stem = O.Env(x)
        O.entry(net.ops[0]).forward(net, net.ops[0], stem)
        assert float(stem["t1"].max()) == 6.0 and float(stem["t1"].min()) == 0.0
        relu = copy.deepcopy(ops)
        relu[0]["act"] = "relu"
        assert not torch.allclose(net(x), QATNet(relu, t, {}).eval()(x))
        sym = copy.deepcopy(ops)
        sym[0]["pad"] = 1  # same output size (8x8), other pixels
        assert not torch.allclose(net(x), QATNet(sym, t, {}).eval()(x))


@pytest.mark.parametrize("name", sorted(NETS))
def test_qat_trains_through_depthwise_and_padding(name):
    net, x = qat_net(name)
    net.train()
    loss = net(x).logsumexp(1).mean()
    loss.backward()
    for key, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
    assert float(net.params["fc__weight"].grad.abs().sum()) > 0
    conv = next(op for op in net.ops if op["op"] == "conv" and op["groups"] > 1)
    assert float(net.weight(conv["name"] + ".weight").grad.abs().sum()) > 0


def test_int8_depthwise_weights_are_per_output_channel():
    net, _ = qat_net("mbconv")
    codes, scales = net.int8_codes(), net.weight_scales()
    q = codes["b1.dw.weight"]
    assert q.shape == (16, 1, 3, 3) and scales["b1.dw.weight"].shape == (16,)
    assert (abs(q.reshape(16, -1)).max(1) == 127).all()  # each channel's own max |w| is code 127
    assert [s.name for s in net.refit_specs()][:3] == ["stem.weight", "stem.scale", "stem.bias"]


def _load(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # as the run's checkpoints are read


def _legacy(ops):
    """The ops as checkpoints wrote them before act/groups: ``relu: bool``, int k/stride/pad."""
    old = []
    for op in ops:
        op = dict(op)
        if op["op"] in ("conv", "add"):
            op["relu"] = op.pop("act") == "relu"
        if op["op"] in ("conv", "maxpool"):
            op.update(k=op["k"][0], stride=op["stride"][0], pad=op["pad"][0])
        op.pop("groups", None)
        old.append(op)
    return old


def test_old_and_new_checkpoints_load_to_the_same_network():
    from edgetool.export.onnx_export import from_qatnet

    torch.manual_seed(0)
    m = M.build("resnet-tiny", 1, 4).eval()
    x = torch.randn(4, 1, 16, 16)
    net = QATNet(*m.to_ir(), m.config)
    net.init_weight_scales()
    net.calibrate([x])
    net.quantize = True
    state = net.state()
    old = dict(state, ops=_legacy(state["ops"]))
    assert all("relu" in op and "act" not in op for op in old["ops"] if op["op"] in ("conv", "add"))
    nets = [QATNet.from_state(_load(s)) for s in (state, old)]
    assert nets[0].ops == nets[1].ops == net.ops
    with torch.no_grad():
        torch.testing.assert_close(nets[0](x), net.eval()(x), rtol=0, atol=0)
        torch.testing.assert_close(nets[1](x), net(x), rtol=0, atol=0)
    a, b = (from_qatnet(n, [1, 16, 16], 4).SerializeToString() for n in nets)
    assert a == b


def test_edge_checkpoint_round_trip():
    net, x = qat_net("mbconv")
    back = QATNet.from_state(_load(net.state()))
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x), rtol=0, atol=0)
    assert back.ops == net.ops


def test_same_pad_is_tensorflows():
    assert O.same_pad([224, 224], [3, 3], [2, 2]) == [0, 0, 1, 1]  # EfficientNet-Lite's stem
    assert O.same_pad([56, 56], [5, 5], [2, 2]) == [1, 1, 2, 2]
    assert O.same_pad([14, 14], [5, 5], [1, 1]) == [2, 2, 2, 2]  # stride 1: symmetric
    assert O.same_pad([7, 8], [3, 3], [2, 2]) == [1, 0, 1, 1]
    assert O.same_pad([1, 1], [1, 1], [2, 2]) == [0, 0, 0, 0]
    ops, _ = NETS["mbconv"]()
    assert ops[0]["pad"] == O.same_pad(SHAPE[1:], [3, 3], [2, 2]) and ops[2]["pad"] == O.same_pad(
        [8, 8], [3, 3], [2, 2]
    )
    for n in range(1, 12):  # the output is ceil(n / stride), as TensorFlow's
        for k in (1, 3, 5):
            for s in (1, 2):
                t, left, b, r = O.same_pad([n, n], [k, k], [s, s])
                assert (n + t + b - k) // s + 1 == -(-n // s) and (t, b) == (left, r) and b - t in (0, 1)
