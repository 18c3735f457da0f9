"""The TensorRT/CUDA path: CPU-testable logic always runs; GPU and TensorRT tests skip with a reason."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_cli

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402

from edgetool.runtime.trt.qdq_rules import check  # noqa: E402
from edgetool.runtime.bundle import Bundle  # noqa: E402
from edgetool.runtime.trt.delta_apply import KERNEL_PATH, VEC, launch_geometry, reference_apply  # noqa: E402
from edgetool.runtime.errors import BundleError  # noqa: E402
from edgetool.runtime.onnx_weights import read_initializers, strip_initializer_inputs  # noqa: E402
from edgetool.runtime.trt.refit_map import build_refit_map  # noqa: E402
from edgetool.runtime.weights import ALIGN, PackedLayout  # noqa: E402


# -- weight map -----------------------------------------------------------------------------
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
    from edgetool.export.onnx_export import strip_refit_inputs

    raw = open(os.path.join(tiny_bundle, "base.onnx"), "rb").read()
    ours = onnx.load_from_string(strip_initializer_inputs(raw))
    ref = strip_refit_inputs(onnx.load_from_string(raw))
    onnx.checker.check_model(ours)
    assert [i.name for i in ours.graph.input] == [i.name for i in ref.graph.input] == ["input"]
    assert ours.graph.initializer == ref.graph.initializer and ours.graph.node == ref.graph.node


# -- packed layout for the kernel ----------------------------------------------------------------
def test_packed_layout_fits_the_kernel(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    lay = b.layout
    assert lay.int8_nbytes % VEC == 0 and lay.total_nbytes % VEC == 0
    n_vec, blocks = launch_geometry(lay.total_nbytes)
    assert n_vec * VEC == lay.total_nbytes and blocks >= 1
    base = lay.pack(read_initializers(b.base_onnx(), [t.name for t in lay.tensors]))
    for k in range(b.num_superclasses):
        d = b.read_delta(k)
        np.testing.assert_array_equal(reference_apply(base, d, lay.int8_nbytes), lay.apply_delta(base, d))
    with pytest.raises(ValueError):
        launch_geometry(lay.total_nbytes + 4)


def test_kernel_source_is_packaged():
    src = open(KERNEL_PATH).read()
    assert "edgetool_delta_apply" in src and "__vadd4" in src


@pytest.mark.parametrize("arch", ["sm_87", "sm_110"])
def test_kernel_compiles_with_nvcc(arch, tmp_path):
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        if os.environ.get("EDGETOOL_REQUIRE_NVCC"):
            pytest.fail("nvcc not found but EDGETOOL_REQUIRE_NVCC is set")
        pytest.skip("nvcc not found")
    for kind in ("ptx", "cubin"):
        out = tmp_path / "delta_add.{}".format(kind)
        proc = subprocess.run([nvcc, "-arch=" + arch, "-" + kind, "-O3", KERNEL_PATH, "-o", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size > 0
    ptx = (tmp_path / "delta_add.ptx").read_text()
    body = ptx.split(".entry edgetool_delta_apply(")[1].split(".entry ")[0]
    # one kernel for the whole packed buffer, 16-byte vectors only: base and delta through the
    # read-only path, one vector store; no narrower global access anywhere in the loop
    loads = [l for l in body.splitlines() if "ld.global" in l]
    stores = [l for l in body.splitlines() if "st.global" in l]
    assert len(loads) == 2 and all("ld.global.nc.v4.u32" in l for l in loads), loads
    assert len(stores) == 1 and "st.global.v4.u32" in stores[0], stores


# -- ONNX rule check -------------------------------------------------------------------------------
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


@pytest.mark.parametrize("damage", [_bad_opset, _bad_zero_point, _bad_zp_dtype, _bad_axis, _bad_scale_count,
                                    _bad_act_scale, _bad_negative_scale, _bad_minus_128, _bad_bn, _bad_qlinearconv,
                                    _bad_float_weight], ids=lambda f: f.__name__[5:])
def test_rule_check_rejects_each_bad_variant(tiny_bundle, damage):
    m = _load(tiny_bundle)
    expect = damage(m)
    problems = check(m)
    assert any(expect in p for p in problems), problems


# -- weight forms: what the TensorRT parser and refitter get, per version and device ---------------
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


@pytest.mark.parametrize("form", ["int8", "qdq-float", "fp16"])
def test_engine_model_refitted_with_host_arrays_is_each_subclass_network(tiny_bundle, form):
    """Emulate the refit on the CPU: the engine's ONNX with its refit weights replaced by
    host_arrays(base (+ delta i)) must compute what ONNX Runtime computes for network i."""
    from edgetool.runtime.backends.base import BASE
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
        consumers = {i: n for n in em.graph.node for i in n.input}
        for t in layout.tensors:
            if t.dtype == "int8":
                q = consumers[engine_name(t, form)]
                assert q.op_type == "QuantizeLinear"
                # TensorRT quantizes float weights with the Q scale: it recovers the codes exactly.
                s = numpy_helper.to_array({i.name: i for i in em.graph.initializer}[q.input[1]])
                codes = np.round(inits[engine_name(t, form)] / s.reshape([-1] + [1] * (len(t.shape) - 1)))
                np.testing.assert_array_equal(codes, base[t.offset:t.offset + t.nbytes].view(np.int8).reshape(t.shape))
    elif form == "fp16":
        assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    # The build-time weights are exactly the refit-time arrays for the base network.
    for name, arr in host_arrays(layout, base, form).items():
        np.testing.assert_array_equal(arr, inits[name])
    plan = refit_plan(layout, form, names)
    assert [n for _, n in plan] == names
    emulated = emulate_refit(b, form, x)
    with OrtBackend(b) as ref:
        for target in [BASE] + list(range(b.num_superclasses)):
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


def test_missing_weights_are_supplied_only_from_model_constants():
    from edgetool.runtime.trt.refit_map import companions

    inits = {"c1.weight": np.ones((2, 2), np.int8), "c1.weight_scale": np.full(2, 0.5, np.float32)}
    supply, unknown = companions(["c1.weight_scale", "c1.weight", "Conv_7_weights"], inits, known=["c1.weight"])
    assert list(supply) == ["c1.weight_scale"] and supply["c1.weight_scale"].flags.c_contiguous
    assert unknown == ["c1.weight", "Conv_7_weights"]


# -- device profiles and CLI ---------------------------------------------------------------------------
def test_device_profiles():
    from edgetool.runtime import device_profiles
    from edgetool.runtime.errors import UsageError

    assert {"orin-nano", "orin-agx", "nano", "tx2", "thor"} <= set(device_profiles.names())
    for name in device_profiles.names():
        p = device_profiles.load(name)
        assert p["precision"] == ("int8" if p["int8"] else "fp16")
    assert device_profiles.load("nano")["precision"] == "fp16"
    with pytest.raises(UsageError, match="unknown device profile"):
        device_profiles.load("jetson-9000")


def test_doctor_without_gpu_reports_skips(tiny_bundle):
    try:
        import pycuda.driver as cuda

        cuda.init()
        has_gpu = cuda.Device.count() > 0
    except Exception:
        has_gpu = False
    if has_gpu:
        pytest.skip("this machine has a GPU; the no-GPU report is checked elsewhere")
    proc = run_cli("doctor", tiny_bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(l.startswith("[PASS] bundle") for l in lines)
    assert any(l.startswith("[PASS] onnxruntime") for l in lines)
    assert any(l.startswith("[SKIP] cuda kernel") and "no GPU" in l for l in lines)
    for form in ("int8", "qdq-float", "fp16"):  # without TensorRT every form is proven on the CPU
        assert any(l.startswith("[PASS] weight form " + form) and "equal each network" in l for l in lines), lines
    assert any(l.startswith("[SKIP] tensorrt") for l in lines)
    assert "could not run here:" in lines[-1]
    js = run_cli("doctor", tiny_bundle, "--json")
    statuses = {c["check"]: c["status"] for c in json.loads(js.stdout)}
    assert statuses["onnxruntime"] == "PASS" and statuses["cuda kernel"] == "SKIP"


def test_doctor_fails_on_corrupt_bundle(bundle_copy):
    with open(os.path.join(bundle_copy, "base.onnx"), "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    proc = run_cli("doctor", bundle_copy)
    assert proc.returncode != 0
    assert any(l.startswith("[FAIL] bundle") and "base.onnx" in l for l in proc.stdout.splitlines())
    assert proc.stderr.strip().splitlines() == ["error: doctor: 1 check(s) failed: bundle"]


def test_engine_build_without_tensorrt(tiny_bundle):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    proc = run_cli("engine", "build", tiny_bundle, "--device-profile", "orin-nano")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["error: tensorrt is not installed; install it with: pip install 'edgetool[jetson]'"]
    proc = run_cli("engine", "build", tiny_bundle, "--device-profile", "nope")
    assert "unknown device profile" in proc.stderr
    proc = run_cli("engine", "build", tiny_bundle, "--weights", "fp8")
    assert proc.returncode == 2 and "'fp8' is not one of 'auto', 'int8', 'qdq-float'" in proc.stderr


def test_engine_onnx_writes_the_parser_model_and_nvidia_tool_commands(tiny_bundle, tmp_path):
    from edgetool.runtime.trt.cli import polygraphy_args, trtexec_args
    from edgetool.runtime.trt.weight_forms import engine_model

    assert trtexec_args("m.onnx", "input", (3, 32, 32), "int8", 16, 512, strip_weights=True) == [
        "trtexec", "--onnx=m.onnx", "--saveEngine=m.plan", "--minShapes=input:1x3x32x32",
        "--optShapes=input:1x3x32x32", "--maxShapes=input:16x3x32x32", "--memPoolSize=workspace:512",
        "--int8", "--fp16", "--refit", "--stripWeights"]
    assert polygraphy_args("m.onnx", "x", (1, 28, 28), "fp16", 8) == [
        "polygraphy", "run", "m.onnx", "--onnxrt", "--trt", "--fp16", "--input-shapes", "x:[1,1,28,28]",
        "--trt-min-shapes", "x:[1,1,28,28]", "--trt-opt-shapes", "x:[1,1,28,28]", "--trt-max-shapes", "x:[8,1,28,28]"]
    b = Bundle.open(tiny_bundle)
    out = tmp_path / "engine.onnx"
    proc = run_cli("engine", "onnx", tiny_bundle, str(out), "--weights", "qdq-float", "--device-profile", "orin-nano")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == engine_model(b.base_onnx(), "qdq-float")
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("trtexec:    trtexec --onnx=" + str(out)) and "--int8 --fp16 --refit" in lines[1]
    assert lines[2].startswith("polygraphy: polygraphy run " + str(out) + " --onnxrt --trt --int8")
    proc = run_cli("engine", "onnx", tiny_bundle, str(out), "--device-profile", "nano")  # fp16 device
    assert proc.returncode == 0 and "fp16 weights" in proc.stdout and "--int8" not in proc.stdout
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        proc = run_cli("engine", "onnx", tiny_bundle, str(tmp_path / "x.onnx"), "--device-profile", "orin-nano")
        assert proc.returncode != 0 and not (tmp_path / "x.onnx").exists()
        assert proc.stderr.strip().splitlines() == [
            "error: TensorRT is not installed here, so --weights auto cannot tell the form: choose --weights int8 "
            "(TensorRT >= 10), qdq-float (TensorRT 8.5/8.6) or fp16"]
    proc = run_cli("engine", "onnx", tiny_bundle, str(out), "--weights", "int8", "--device-profile", "nano")
    assert proc.returncode != 0 and "use --weights fp16" in proc.stderr


def test_kernel_benchmark_without_gpu_says_so_and_writes_nothing(tmp_path):
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count():
            pytest.skip("this machine has a GPU: the benchmark runs for real there")
    except Exception:
        pass
    out = tmp_path / "k.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "kernel_bandwidth.py"), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and not out.exists()
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: kernel_bandwidth needs pycuda and an NVIDIA GPU")


# -- GPU and TensorRT (skip with a reason where absent) ------------------------------------------------
def _gpu_or_skip():
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            pytest.skip("no CUDA device")
    except ImportError:
        pytest.skip("pycuda is not installed (pip install 'edgetool[gpu]')")
    except Exception as exc:
        pytest.skip("CUDA unavailable: {}".format(exc))


@pytest.mark.gpu
def test_kernel_bit_exact_on_gpu():
    _gpu_or_skip()
    import pycuda.autoinit  # noqa: F401

    from edgetool.runtime.trt.delta_apply import compile_module
    from edgetool.runtime.trt.kernel_check import check_kernel

    mod = compile_module()
    for nbytes, int8_nbytes in ((1 << 12, 1 << 11), (1 << 20, 3 << 18), ((1 << 22) + 256, 1 << 21)):
        res = check_kernel(mod, nbytes=nbytes, int8_nbytes=int8_nbytes, repeats=2)
        assert res["exact"], (nbytes, int8_nbytes)


@pytest.mark.gpu
def test_device_applier_matches_numpy_on_real_bundle(tiny_bundle):
    _gpu_or_skip()
    import pycuda.autoinit  # noqa: F401

    from edgetool.runtime.trt.delta_apply import DeviceDeltaApplier

    b = Bundle.open(tiny_bundle)
    base = b.layout.pack(read_initializers(b.base_onnx(), [t.name for t in b.layout.tensors]))
    app = DeviceDeltaApplier(b.layout, base)
    try:
        for k in range(b.num_superclasses):
            d = b.read_delta(k)
            app.apply(d)
            np.testing.assert_array_equal(app.download(), b.layout.apply_delta(base, d))
        app.apply(None)
        np.testing.assert_array_equal(app.download(), base)
    finally:
        app.free()


@pytest.mark.tensorrt
@pytest.mark.parametrize("mode", ["one-engine", "two-engine"])
def test_tensorrt_matches_onnxruntime(tiny_bundle, mode):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it ships with JetPack)")
    _gpu_or_skip()
    from edgetool.runtime.backends.base import BASE
    from edgetool.runtime.backends.ort import OrtBackend
    from edgetool.runtime.trt.backend import TrtBackend

    b = Bundle.open(tiny_bundle)
    x = b.samples()
    with OrtBackend(b) as ref, TrtBackend(b, mode=mode) as trt:
        for target in [BASE, 0, BASE, 1, 2, 0, BASE]:
            ref.switch(target)
            trt.switch(target)
            r, t = ref.infer(x), trt.infer(x)
            n = b.num_superclasses if target == BASE else len(b.superclasses[target].subclasses)
            np.testing.assert_array_equal(r[:, :n].argmax(1), t[:, :n].argmax(1))
            assert np.abs(r - t)[:, :n].max() < 0.05 * np.abs(r[:, :n]).max()
