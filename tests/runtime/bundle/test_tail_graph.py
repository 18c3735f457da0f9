"""Cutting a model at a tensor, on the serialized bytes (no onnx package on the device): one model
runs either the whole network, its trunk's output read beside the logits, or, given that output,
only the rest; a tensor that does not cut the graph is refused."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgetool.runtime.bundle.onnx_graph import trunk_or_given  # noqa: E402
from edgetool.runtime.bundle.onnx_weights import drop_initializers  # noqa: E402


def session(data: bytes):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def two_part_model(residual_over_cut: bool = False) -> bytes:
    """x -> MatMul(W1) -> Mul(scale) -> Relu -> h -> MatMul(W) -> Mul(scale) -> y; scale comes from a
    node that reads only an initializer and serves both parts (it stays outside the trunk); W1 passes
    through a node only the trunk needs (it moves inside)."""
    rng = np.random.default_rng(2)
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 5)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=(5, 4)).astype(np.float32), "W"),
        numpy_helper.from_array(np.array([0.5], np.float32), "s"),
    ]
    nodes = [
        helper.make_node("Abs", ["s"], ["scale"]),
        helper.make_node("Identity", ["W1"], ["W1q"]),  # a weight's preparation (dequantization), trunk only
        helper.make_node("MatMul", ["x", "W1q"], ["a"]),
        helper.make_node("Mul", ["a", "scale"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["h"]),
        helper.make_node("MatMul", ["h", "W"], ["m"]),
        helper.make_node("Mul", ["m", "scale"], ["y0"]),
    ]
    nodes.append(
        helper.make_node("Add", ["y0", "a"], ["y"])
        if residual_over_cut
        else helper.make_node("Identity", ["y0"], ["y"])
    )
    f = TensorProto.FLOAT
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", f, ["N", 3]), helper.make_tensor_value_info("W1", f, [3, 5]),
         helper.make_tensor_value_info("W", f, [5, 4])],
        [helper.make_tensor_value_info("y", f, ["N", 4])],
        initializer=inits,
        value_info=[helper.make_tensor_value_info("a", f, ["N", 5])],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


def test_one_model_runs_the_whole_network_or_only_the_rest_after_a_given_trunk():
    x = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    whole = session(two_part_model())
    y = whole.run(["y"], {"x": x})[0]
    w1 = numpy_helper.to_array(onnx.load_from_string(two_part_model()).graph.initializer[0])
    h = np.maximum((x @ w1) * 0.5, 0)  # the trunk: MatMul(W1), Mul(|s| = 0.5), Relu
    both = trunk_or_given(two_part_model(), "h", "h_given", "run_trunk")
    graph = onnx.load_from_string(both).graph
    assert [n.op_type for n in graph.node] == ["Abs", "If", "MatMul", "Mul", "Identity"]
    then = next(a.g for a in graph.node[1].attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node] == ["Identity", "MatMul", "Mul", "Relu"]  # the second pass skips them
    # every weight stays a bindable graph input, held once by whoever binds it
    s = session(drop_initializers(both, ["W1", "W"]))
    assert {i.name for i in s.get_inputs()} == {"x", "W1", "W", "h_given", "run_trunk"}
    w1, w = (numpy_helper.to_array(t) for t in onnx.load_from_string(two_part_model()).graph.initializer[:2])
    first = {"x": x, "W1": w1, "W": w, "h_given": np.zeros((0,), np.float32), "run_trunk": np.array(True)}
    y1, h1 = s.run(["y", "h"], first)
    np.testing.assert_array_equal(y1, y)
    np.testing.assert_allclose(h1, h, rtol=1e-6, atol=1e-6)
    w2 = np.ones((5, 4), np.float32)  # a specialist's tail weights, the trunk's left alone
    second = {"x": np.zeros((0, 3), np.float32), "W1": w1, "W": w2, "h_given": h, "run_trunk": np.array(False)}
    y2 = s.run(["y"], second)[0]  # the rest alone, from the trunk's output given
    np.testing.assert_allclose(y2, whole.run(["y"], {"x": x, "W": w2})[0], rtol=1e-6)
    assert not np.allclose(y2, y)


def test_one_model_refuses_a_tensor_that_does_not_cut_the_graph():
    with pytest.raises(ValueError, match="does not cut the graph: the rest also reads a"):
        trunk_or_given(two_part_model(residual_over_cut=True), "h", "h_given", "run_trunk")
    with pytest.raises(ValueError, match="no node computes tensor 'nowhere'"):
        trunk_or_given(two_part_model(), "nowhere", "h_given", "run_trunk")
    with pytest.raises(ValueError, match="'scale' is not computed from the image"):
        trunk_or_given(two_part_model(), "scale", "h_given", "run_trunk")
