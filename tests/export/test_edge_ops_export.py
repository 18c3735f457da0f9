"""Depthwise convs, ReLU6 and TF-style asymmetric pads end to end: QAT -> Q/DQ ONNX -> ONNX Runtime ->
bundle -> exact delta switches (and the TensorRT weight forms, replayed on the CPU)."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

from edge_ir import NETS, SHAPE, HEAD, qat_net  # noqa: E402
from edgetool.export.onnx_export import from_qatnet  # noqa: E402
from edgetool.runtime.backends.ort import plain_session  # noqa: E402
from edgetool.runtime.trt.qdq_rules import check  # noqa: E402


def _run(model, x):
    return plain_session(model.SerializeToString(), ["CPUExecutionProvider"]).run(["logits", "features"], {"input": x})


@pytest.mark.parametrize("name", sorted(NETS))
def test_onnx_runtime_matches_the_int8_qat_network(name):
    net, x = qat_net(name)
    with torch.no_grad():
        logits, feats = (t.numpy() for t in net(x, features=True))
    got, got_feats = _run(from_qatnet(net, SHAPE, HEAD, refit_inputs=False), x.numpy())
    # Same int8 grids; float order of operations differs, so a value on a rounding edge may land one
    # activation code away (as for the ResNets in tests/test_spine.py).
    assert np.abs(got - logits).max() < 0.05 * max(1.0, np.abs(logits).max()), np.abs(got - logits).max()
    assert np.abs(got_feats - feats).max() < 0.05 * max(1.0, np.abs(feats).max())
    np.testing.assert_array_equal(got.argmax(1), logits.argmax(1))
    # the exported graph is the op list: with the overridable initializers as inputs, nothing changes
    refit = from_qatnet(net, SHAPE, HEAD, refit_inputs=True)
    np.testing.assert_array_equal(_run(refit, x.numpy())[0], got)


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_onnx_nodes_carry_groups_pads_and_clip():
    net, _ = qat_net("mbconv")
    m = from_qatnet(net, SHAPE, HEAD)
    assert check(m) == []  # TensorRT's explicit-quantization rules, Clip bounds included
    nodes = {n.name: n for n in m.graph.node}
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert _attrs(nodes["b1.dw"]) == dict(group=16, kernel_shape=[3, 3], pads=[0, 0, 1, 1], strides=[2, 2])
    assert _attrs(nodes["b2.dw"]) == dict(group=16, kernel_shape=[5, 5], pads=[2, 2, 2, 2], strides=[1, 1])
    assert "group" not in _attrs(nodes["b1.expand"])  # ONNX's default, as for every ResNet conv
    clips = [n for n in m.graph.node if n.op_type == "Clip"]
    assert sorted(n.name for n in clips) == sorted(
        op["name"] + ".relu6" for op in net.ops if op["op"] == "conv" and op["act"] == "relu6"
    )
    for n in clips:
        assert list(n.input[1:]) == ["relu6.min", "relu6.max"]
    assert inits["relu6.min"].shape == inits["relu6.max"].shape == () and inits["relu6.max"] == 6.0
    assert inits["relu6.min"].dtype == np.float32 and inits["relu6.min"] == 0.0
    # the residual add has no activation; nothing but Clip activates
    assert nodes["t8.add"].output[0] == "t8" and not [n for n in m.graph.node if n.op_type == "Relu"]
    # a depthwise weight: int8 [C, 1, kh, kw], per-output-channel scales on axis 0, zero-point 0
    assert inits["b1.dw.weight"].dtype == np.int8 and inits["b1.dw.weight"].shape == (16, 1, 3, 3)
    assert inits["b1.dw.weight_scale"].shape == inits["b1.dw.weight_zp"].shape == (16,)
    assert _attrs(nodes["b1.dw.weight.dequant"]) == {"axis": 0}
    # only the refittable tensors are graph inputs; the Clip bounds and Q/DQ scales stay constants
    inputs = {i.name for i in m.graph.input}
    assert inputs == {"input"} | {s.name for s in net.refit_specs()}


def _subclass(base, k):
    """A fine-tune stand-in with the base's frozen scales: depthwise and expand codes move, BatchNorm shifts."""
    sub = copy.deepcopy(base)
    with torch.no_grad():
        sub.weight("b1.dw.weight").mul_(1.0 + 0.1 * (k + 1))
        sub.weight("b2.expand.weight").add_(0.02 * (k + 1))
        sub.bns["b2__dw"].bias.add_(0.05)
        sub.weight("fc.bias").add_(0.1 * k)
    return sub


@pytest.fixture(scope="module")
def edge_bundle(tmp_path_factory):
    from edgetool.export.bundle import write_bundle
    from edgetool.toolchain.hierarchy.spec import Hierarchy

    hier = Hierarchy(["a", "b"], [["a1", "a2", "a3"], ["b1", "b2", "b3", "b4", "b5"]])
    assert hier.head_width == HEAD
    base, x = qat_net("mbconv")
    subs = [_subclass(base, k) for k in range(hier.n_super)]
    spec = {
        "name": "input",
        "shape": list(SHAPE),
        "layout": "NCHW",
        "dtype": "float32",
        "scale": 1.0 / 255.0,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "color": "rgb",
        "classes": [c for s in hier.subclasses for c in s],
    }
    out = str(tmp_path_factory.mktemp("edge") / "bundle")
    write_bundle(out, base, subs, hier, spec, codec="zstd", samples=x[:6].numpy(), release=0)
    return out, base, subs


def test_bundle_switches_are_exact(edge_bundle):
    from edgetool.runtime.backends.base import BASE
    from edgetool.runtime.backends.ort import OrtBackend
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.bundle.onnx_weights import read_initializers
    from edgetool.runtime.trt.refit_map import build_refit_map

    out, base, subs = edge_bundle
    b = Bundle.open(out)
    x = b.samples()
    assert check(onnx.load_from_string(b.base_onnx())) == []
    entries = {e.name: e for e in build_refit_map(b.layout, b.base_onnx())}
    assert entries["b1.dw.weight"].shape == (16, 1, 3, 3) and entries["b2.dw.weight"].shape == (16, 1, 5, 5)
    assert set(b.manifest["refit"]["changed"]) == {
        "b1.dw.weight",
        "b2.expand.weight",
        "b2.dw.bias",
        "fc.bias",
    }
    inits = read_initializers(b.base_onnx())
    base_buf = b.layout.pack({t.name: inits[t.name] for t in b.layout.tensors})
    for k, sub in enumerate(subs):  # base + delta gives the subclass network's codes, bit for bit
        rebuilt = b.layout.views(b.layout.apply_delta(base_buf, b.read_delta(k)))
        for name, q in sub.int8_codes().items():
            np.testing.assert_array_equal(rebuilt[name], q, err_msg=name)
        assert (rebuilt["b1.dw.weight"] != base.int8_codes()["b1.dw.weight"]).any()
        for name, f in sub.float_tensors().items():
            np.testing.assert_allclose(rebuilt[name], f, rtol=0, atol=1e-6)
    nets = [(BASE, base)] + list(enumerate(subs))
    with OrtBackend(b) as be:
        for target, net in nets + nets[::-1]:  # every switch lands on the exact network
            be.switch(target)
            got = be.infer(x)
            want = _run(from_qatnet(net, SHAPE, HEAD, refit_inputs=False), x)[0]
            assert np.abs(got - want).max() <= 1e-5, (target, np.abs(got - want).max())


@pytest.mark.parametrize("form", ["int8", "qdq-float", "fp16"])
def test_tensorrt_weight_forms_refit_depthwise_weights(edge_bundle, form):
    """The engine's model of each weight form, refitted with the arrays the refitter gets, computes
    each network as the engine built from it would (replayed in ONNX Runtime)."""
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.trt.emulate import emulate_refit
    from edgetool.runtime.trt.weight_forms import engine_model

    b = Bundle.open(edge_bundle[0])
    em = onnx.load_from_string(engine_model(b.base_onnx(), form))
    onnx.checker.check_model(em)
    if form == "qdq-float":
        assert check(em) == []
    assert sum(n.op_type == "Clip" for n in em.graph.node) == 6
    for target, (got, own) in emulate_refit(b, form, b.samples()).items():
        np.testing.assert_array_equal(got, own, err_msg=str(target))
