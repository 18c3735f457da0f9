"""Weight forms: what the TensorRT parser and refitter get, per version and device, proven in ONNX Runtime."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

from edgetool.runtime.bundle.reader import Bundle  # noqa: E402
from edgetool.runtime.bundle.onnx_weights import read_initializers  # noqa: E402
from edgetool.runtime.trt.qdq_rules import check  # noqa: E402


def test_weight_form_by_tensorrt_version():
    from edgetool.runtime.trt.weight_forms import weight_form
    from edgetool.runtime.errors import UsageError

    assert weight_form((8, 5), "int8") == "qdq-float"  # JetPack 5.1
    assert weight_form((8, 6), "int8") == "qdq-float"  # JetPack 6.0
    assert weight_form((10, 3), "int8") == "int8"  # JetPack 6.1 / 6.2
    assert weight_form((10, 3), "int8", "qdq-float") == "qdq-float"
    assert weight_form((8, 5), "int8", "int8") == "int8"
    assert weight_form((8, 5), "fp16") == weight_form((10, 3), "fp16", "int8") == "fp16"
    for bad in ("fp16", "float"):
        with pytest.raises(UsageError, match="int8 or qdq-float"):
            weight_form((10, 3), "int8", bad)
    with pytest.raises(UsageError, match="precision"):
        weight_form((10, 3), "fp8")


def _ort_run(model_bytes, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _assert_quantize_recovers_codes(em, layout, base, inits):
    """Each int8 tensor's float weights feed a QuantizeLinear whose scale gives back the int8 codes exactly
    (TensorRT quantizes float weights with the Q scale)."""
    from edgetool.runtime.trt.weight_forms import engine_name

    consumers = {i: n for n in em.graph.node for i in n.input}
    for t in layout.tensors:
        if t.dtype == "int8":
            q = consumers[engine_name(t, "qdq-float")]
            assert q.op_type == "QuantizeLinear"
            s = numpy_helper.to_array({i.name: i for i in em.graph.initializer}[q.input[1]])
            codes = np.round(inits[engine_name(t, "qdq-float")] / s.reshape([-1] + [1] * (len(t.shape) - 1)))
            np.testing.assert_array_equal(codes, base[t.offset : t.offset + t.nbytes].view(np.int8).reshape(t.shape))


@pytest.mark.parametrize("form", ["int8", "qdq-float", "fp16"])
def test_engine_model_refitted_with_host_arrays_is_each_subclass_network(tiny_bundle, form):
    """Emulate the refit on the CPU: the engine's ONNX with its refit weights replaced by
    host_arrays(base (+ delta i)) must compute what ONNX Runtime computes for network i."""
    from edgetool.runtime.backends.base import BASE, targets
    from edgetool.runtime.backends.ort import OrtBackend
    from edgetool.runtime.trt.emulate import emulate_refit
    from edgetool.runtime.trt.refit_map import refit_plan
    from edgetool.runtime.trt.weight_forms import engine_model, engine_name, host_arrays

    b = Bundle.open(tiny_bundle)
    x = b.samples()
    layout = b.layout
    base = layout.pack(read_initializers(b.base_onnx(), [t.name for t in layout.tensors]))
    em = onnx.load_from_string(engine_model(b.base_onnx(), form))
    onnx.checker.check_model(em)
    assert [i.name for i in em.graph.input] == ["input"]  # no initializer-inputs for TensorRT
    inits = {t.name: numpy_helper.to_array(t) for t in em.graph.initializer}
    ops = [n.op_type for n in em.graph.node]
    names = [engine_name(t, form) for t in layout.tensors]
    assert set(names) <= set(inits)
    if form == "int8":
        assert names == [t.name for t in layout.tensors]
    else:
        assert not any(t.name in inits for t in layout.tensors if t.dtype == "int8")
        assert all(inits[n].dtype == np.float32 for n in names)
    if form == "qdq-float":
        assert check(em) == []  # still an explicitly quantized model TensorRT accepts
        _assert_quantize_recovers_codes(em, layout, base, inits)
    elif form == "fp16":
        assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    # The build-time weights are exactly the refit-time arrays for the base network.
    for name, arr in host_arrays(layout, base, form).items():
        np.testing.assert_array_equal(arr, inits[name])
    plan = refit_plan(layout, form, names)
    assert [n for _, n in plan] == names
    emulated = emulate_refit(b, form, x)
    with OrtBackend(b) as ref:
        for target in targets(b.num_superclasses):
            got, own = emulated[target]
            np.testing.assert_array_equal(got, own)  # refit arrays == the network's own engine weights
            ref.switch(target)
            want = ref.infer(x)
            n = b.num_superclasses if target == BASE else len(b.superclasses[target].subclasses)
            if form != "fp16":
                assert np.abs(got - want)[:, :n].max() <= 1e-5, (form, target)
            elif target == BASE:  # activations are no longer quantized: only their rounding differs
                err = np.abs(got - want)[:, :n].max()
                assert err < 0.1 * np.abs(want[:, :n]).max()
                top2 = np.sort(want[:, :n], 1)
                clear = top2[:, -1] - top2[:, -2] > 2 * err  # a margin that rounding cannot flip
                np.testing.assert_array_equal(got[clear, :n].argmax(1), want[clear, :n].argmax(1))


def test_select_engine_for_this_tensorrt_and_gpu():
    from edgetool.runtime.trt.engine_store import select_engine
    from edgetool.runtime.errors import DeviceError

    orin = {"file": "engines/orin-nano-int8.plan", "precision": "int8", "tensorrt": "10.3.0", "device": "Orin"}
    nano = {"file": "engines/nano-fp16.plan", "precision": "fp16", "tensorrt": "8.2.1", "device": "NVIDIA Tegra X1"}
    assert select_engine([], "10.3.0", "Orin") is None
    assert select_engine([nano, orin], "10.3.0", "Orin") is orin
    assert select_engine([nano, orin], "8.2.1", "NVIDIA Tegra X1", "fp16") is nano
    assert select_engine([orin], "10.3.0", "Orin", "fp16") is None  # none of that precision: build one
    with pytest.raises(DeviceError) as e:
        select_engine([orin], "8.6.2", "Orin", bundle="b/")
    msg = str(e.value)
    assert "TensorRT 8.6.2" in msg and "engines/orin-nano-int8.plan (Orin, TensorRT 10.3.0)" in msg
    assert msg.endswith("run: edgetool engine build b/") and "\n" not in msg
