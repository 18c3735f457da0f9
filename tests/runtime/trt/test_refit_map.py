"""The refit weight map: which engine weights a switch writes, and the constants TensorRT also asks for."""

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

from edgetool.runtime.bundle.reader import Bundle  # noqa: E402
from edgetool.runtime.errors import BundleError  # noqa: E402
from edgetool.runtime.bundle.onnx_weights import read_initializers, strip_initializer_inputs  # noqa: E402
from edgetool.runtime.trt.refit_map import build_refit_map  # noqa: E402
from edgetool.runtime.bundle.weights import ALIGN, PackedLayout  # noqa: E402


def test_refit_map_matches_onnx_initializers(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    model_bytes = b.base_onnx()
    model = onnx.load_from_string(model_bytes)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    entries = build_refit_map(b.layout, model_bytes)
    assert [e.name for e in entries] == [t.name for t in b.layout.tensors]
    conv_gemm = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len([e for e in entries if e.dtype == "int8"]) == len(conv_gemm)
    for e in entries:
        a = inits[e.name]
        assert a.shape == e.shape and a.size == e.count
        assert str(a.dtype) == e.dtype
        assert e.offset % ALIGN == 0
    # every Conv/Gemm weight is an int8 refit tensor reached through DequantizeLinear
    dq = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for n in conv_gemm:
        assert dq[n.input[1]] in {e.name for e in entries}
    # the protobuf reader agrees with onnx
    for name, a in read_initializers(model_bytes).items():
        np.testing.assert_array_equal(a, inits[name])


def test_refit_map_rejects_mismatch(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    d = b.layout.to_dict()
    d["tensors"][0]["name"] = "not.there.weight"
    with pytest.raises(BundleError, match="not an initializer"):
        build_refit_map(PackedLayout.from_dict(d), b.base_onnx())
    d = b.layout.to_dict()
    t = d["tensors"][-1]
    t["shape"] = [t["shape"][0] * 2] + t["shape"][1:]
    t["nbytes"] *= 2
    d["total_nbytes"] += 4096
    with pytest.raises(BundleError, match="shape"):
        build_refit_map(PackedLayout.from_dict(d), b.base_onnx())


def test_strip_initializer_inputs_matches_onnx(tiny_bundle):
    raw = open(os.path.join(tiny_bundle, "base.onnx"), "rb").read()
    ours = onnx.load_from_string(strip_initializer_inputs(raw))
    ref = onnx.load_from_string(raw)  # the same edit through the onnx package
    keep = [i for i in ref.graph.input if i.name not in {t.name for t in ref.graph.initializer}]
    del ref.graph.input[:]
    ref.graph.input.extend(keep)
    onnx.checker.check_model(ours)
    assert [i.name for i in ours.graph.input] == [i.name for i in ref.graph.input] == ["input"]
    assert ours.graph.initializer == ref.graph.initializer and ours.graph.node == ref.graph.node


def test_refit_plan_refuses_to_freeze_a_changing_tensor(tiny_bundle):
    from edgetool.runtime.trt.refit_map import refit_plan
    from edgetool.runtime.trt.weight_forms import engine_name
    from edgetool.runtime.errors import BackendError

    b = Bundle.open(tiny_bundle)
    layout = b.layout

    def never():
        raise AssertionError("changed tensors are only needed when the engine leaves some out")

    names = [engine_name(t, "qdq-float") for t in layout.tensors]
    assert [n for _, n in refit_plan(layout, "qdq-float", names + ["conv1.weight_scale"], never)] == names
    changed = layout.changed_tensors(b.read_delta(k) for k in range(b.num_superclasses))
    # REFIT_INDIVIDUAL: exactly the changed tensors are refittable
    plan = refit_plan(layout, "int8", changed, lambda: changed)
    assert [s.name for s, _ in plan] == changed
    frozen = changed[len(changed) // 2]
    with pytest.raises(BackendError, match="cannot refit 1 tensor.*" + frozen.replace(".", r"\.")):
        refit_plan(layout, "int8", [c for c in changed if c != frozen], lambda: changed)
    with pytest.raises(BackendError, match="cannot refit"):
        refit_plan(layout, "int8", changed[1:], None)  # unknown changes: every tensor must be refittable


def test_missing_weights_are_supplied_only_from_model_constants():
    from edgetool.runtime.trt.refit_map import companions

    inits = {"c1.weight": np.ones((2, 2), np.int8), "c1.weight_scale": np.full(2, 0.5, np.float32)}
    supply, unknown = companions(["c1.weight_scale", "c1.weight", "Conv_7_weights"], inits, known=["c1.weight"])
    assert list(supply) == ["c1.weight_scale"] and supply["c1.weight_scale"].flags.c_contiguous
    assert unknown == ["c1.weight", "Conv_7_weights"]
