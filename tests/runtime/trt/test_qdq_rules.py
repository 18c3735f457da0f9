"""TensorRT's explicit-quantization rules, checked on base.onnx and on damaged copies of it."""

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402

from edgetool.runtime.trt.qdq_rules import check  # noqa: E402


def _load(tiny_bundle):
    return onnx.load(os.path.join(tiny_bundle, "base.onnx"))


def _init(m, name):
    return next(t for t in m.graph.initializer if t.name == name)


def _set(m, name, array):
    _init(m, name).CopyFrom(numpy_helper.from_array(array, name))


def test_rule_check_passes_good_model(tiny_bundle):
    assert check(_load(tiny_bundle)) == []


def _bad_opset(m):
    m.opset_import[0].version = 12
    return "opset 12"


def _bad_zero_point(m):
    _set(m, "input.act_zp", np.asarray(3, np.int8))
    return "zero-point is not 0"


def _bad_zp_dtype(m):
    _set(m, "input.act_zp", np.asarray(0, np.uint8))
    return "zero-point dtype uint8"


def _bad_axis(m):
    n = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "stem.weight")
    for a in n.attribute:
        if a.name == "axis":
            a.i = 1
    return "axis 0"


def _bad_scale_count(m):
    s = numpy_helper.to_array(_init(m, "stem.weight_scale"))
    _set(m, "stem.weight_scale", np.concatenate([s, s[:1]]))
    return "weight scales for"


def _bad_act_scale(m):
    _set(m, "input.act_scale", np.asarray([0.1, 0.2], np.float32))
    return "per-tensor"


def _bad_negative_scale(m):
    _set(m, "input.act_scale", np.asarray(-0.1, np.float32))
    return "> 0"


def _bad_minus_128(m):
    w = numpy_helper.to_array(_init(m, "stem.weight")).copy()
    w.flat[0] = -128
    _set(m, "stem.weight", w)
    return "-128"


def _bad_bn(m):
    c = numpy_helper.to_array(_init(m, "stem.scale")).shape[0]
    for nm, v in (("bn.s", 1.0), ("bn.b", 0.0), ("bn.m", 0.0), ("bn.v", 1.0)):
        m.graph.initializer.append(numpy_helper.from_array(np.full(c, v, np.float32), nm))
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    bn = helper.make_node("BatchNormalization", [conv.output[0], "bn.s", "bn.b", "bn.m", "bn.v"], ["bn.out"], name="bn")
    m.graph.node.append(bn)
    return "BatchNormalization"


def _bad_qlinearconv(m):
    m.graph.node.append(helper.make_node("QLinearConv", ["a", "b", "c", "d", "e", "f", "g", "h"], ["q"], name="qconv"))
    return "QLinearConv"


def _bad_float_weight(m):
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    w = numpy_helper.to_array(_init(m, "fc.weight")).astype(np.float32)
    m.graph.initializer.append(numpy_helper.from_array(w, "fc.weight_float"))
    gemm.input[1] = "fc.weight_float"
    return "not quantized"


def _clip_after_stem(m, bound):
    """A ReLU6 (Clip) after the stem conv's BatchNorm, its upper bound *bound*."""
    m.graph.initializer.append(numpy_helper.from_array(np.asarray(0.0, np.float32), "relu6.min"))
    add = next(n for n in m.graph.node if n.name == "stem.bn_bias")
    m.graph.node.append(
        helper.make_node("Clip", [add.output[0], "relu6.min", bound], ["stem.clipped"], name="stem.relu6")
    )


def _bad_clip_bound(m):
    m.graph.input.append(helper.make_tensor_value_info("clip.max", onnx.TensorProto.FLOAT, []))
    _clip_after_stem(m, "clip.max")
    return "Clip max clip.max is not a constant initializer"


def _bad_clip_shape(m):
    _clip_after_stem(m, "stem.weight_scale")
    return "Clip max stem.weight_scale is not a scalar"


@pytest.mark.parametrize(
    "damage",
    [
        _bad_opset,
        _bad_zero_point,
        _bad_zp_dtype,
        _bad_axis,
        _bad_scale_count,
        _bad_act_scale,
        _bad_negative_scale,
        _bad_minus_128,
        _bad_bn,
        _bad_qlinearconv,
        _bad_float_weight,
        _bad_clip_bound,
        _bad_clip_shape,
    ],
    ids=lambda f: f.__name__[5:],
)
def test_rule_check_rejects_each_bad_variant(tiny_bundle, damage):
    m = _load(tiny_bundle)
    expect = damage(m)
    problems = check(m)
    assert any(expect in p for p in problems), problems
