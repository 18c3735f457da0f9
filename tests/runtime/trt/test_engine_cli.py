"""``edgetool engine`` on a machine without TensorRT, and the TensorRT backend against ONNX Runtime where it runs."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgetool.runtime.bundle.reader import Bundle  # noqa: E402


TRT_HINT = {
    False: "TensorRT comes with JetPack on a Jetson (pip install tensorrt on an x86 machine with an NVIDIA GPU)",
    True: "TensorRT comes with JetPack (a virtualenv sees JetPack's TensorRT only when made with "
    "--system-site-packages)",
}


def test_engine_build_without_tensorrt(run_cli, tiny_bundle):
    from edgetool.runtime.machine import is_jetson

    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    proc = run_cli("engine", "build", tiny_bundle, "--device-profile", "orin-nano")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["error: tensorrt is not installed; " + TRT_HINT[is_jetson()]]
    proc = run_cli("engine", "build", tiny_bundle, "--device-profile", "nope")
    assert "unknown device profile" in proc.stderr
    proc = run_cli("engine", "build", tiny_bundle, "--weights", "fp8")
    assert proc.returncode == 2 and "'fp8' is not one of 'auto', 'int8', 'qdq-float'" in proc.stderr


def test_classify_with_tensorrt_where_there_is_none(run_cli, tiny_bundle, sample_pngs):
    from edgetool.runtime.machine import is_jetson

    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    proc = run_cli("classify", tiny_bundle, *sample_pngs[:2], "--backend", "tensorrt")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["error: tensorrt is not installed; " + TRT_HINT[is_jetson()]]


def test_trtexec_and_polygraphy_command_lines():
    from edgetool.runtime.trt.cli import polygraphy_args, trtexec_args

    assert trtexec_args("m.onnx", "input", (3, 32, 32), "int8", 16, 512, strip_weights=True) == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.plan",
        "--minShapes=input:1x3x32x32",
        "--optShapes=input:1x3x32x32",
        "--maxShapes=input:16x3x32x32",
        "--memPoolSize=workspace:512",
        "--int8",
        "--fp16",
        "--refit",
        "--stripWeights",
    ]
    typed = trtexec_args("m.onnx", "input", (3, 32, 32), "int8", 16, 512, strongly_typed=True)
    assert typed[-2:] == ["--stronglyTyped", "--refit"]
    assert polygraphy_args("m.onnx", "x", (1, 28, 28), "int8", 8, strongly_typed=True)[5] == "--strongly-typed"
    assert polygraphy_args("m.onnx", "x", (1, 28, 28), "fp16", 8) == [
        "polygraphy",
        "run",
        "m.onnx",
        "--onnxrt",
        "--trt",
        "--fp16",
        "--input-shapes",
        "x:[1,1,28,28]",
        "--trt-min-shapes",
        "x:[1,1,28,28]",
        "--trt-opt-shapes",
        "x:[1,1,28,28]",
        "--trt-max-shapes",
        "x:[8,1,28,28]",
    ]


def test_engine_onnx_writes_the_parser_model_and_nvidia_tool_commands(run_cli, tiny_bundle, tmp_path):
    from edgetool.runtime.trt.weight_forms import engine_model

    b = Bundle.open(tiny_bundle)
    out = tmp_path / "engine.onnx"
    proc = run_cli("engine", "onnx", tiny_bundle, str(out), "--weights", "qdq-float", "--device-profile", "orin-nano")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == engine_model(b.base_onnx(), "qdq-float")
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("trtexec:    trtexec --onnx=" + str(out)) and "--int8 --fp16 --refit" in lines[1]
    assert lines[2].startswith("polygraphy: polygraphy run " + str(out) + " --onnxrt --trt --int8")
    if not _has_tensorrt():  # int8 weights need TensorRT >= 10, which builds int8 engines strongly typed
        proc = run_cli("engine", "onnx", tiny_bundle, str(out), "--weights", "int8", "--device-profile", "orin-nano")
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert "--stronglyTyped --refit" in lines[1] and "--int8" not in lines[1]
        assert " --onnxrt --trt --strongly-typed " in lines[2] and "--int8" not in lines[2]
    proc = run_cli("engine", "onnx", tiny_bundle, str(out), "--device-profile", "nano")  # fp16 device
    assert proc.returncode == 0 and "fp16 weights" in proc.stdout and "--int8" not in proc.stdout
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        proc = run_cli("engine", "onnx", tiny_bundle, str(tmp_path / "x.onnx"), "--device-profile", "orin-nano")
        assert proc.returncode != 0 and not (tmp_path / "x.onnx").exists()
        assert proc.stderr.strip().splitlines() == [
            "error: TensorRT is not installed here, so --weights auto cannot tell the form: choose --weights int8 "
            "(TensorRT >= 10), qdq-float (TensorRT 8.5/8.6) or fp16"
        ]
    proc = run_cli("engine", "onnx", tiny_bundle, str(out), "--weights", "int8", "--device-profile", "nano")
    assert proc.returncode != 0 and "use --weights fp16" in proc.stderr


def _has_tensorrt():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.tensorrt
@pytest.mark.parametrize("mode", ["one-engine", "two-engine"])
def test_tensorrt_matches_onnxruntime(cuda_device, tiny_bundle, mode):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it ships with JetPack)")
    from edgetool.runtime.backends.base import BASE
    from edgetool.runtime.backends.ort import OrtBackend
    from edgetool.runtime.trt.backend import TrtBackend

    b = Bundle.open(tiny_bundle)
    x = b.samples()
    with OrtBackend(b) as ref, TrtBackend.from_bundle(b, mode=mode) as trt:
        for target in [BASE, 0, BASE, 1, 2, 0, BASE]:
            ref.switch(target)
            trt.switch(target)
            r, t = ref.infer(x), trt.infer(x)
            n = b.num_superclasses if target == BASE else len(b.superclasses[target].subclasses)
            np.testing.assert_array_equal(r[:, :n].argmax(1), t[:, :n].argmax(1))
            assert np.abs(r - t)[:, :n].max() < 0.05 * np.abs(r[:, :n]).max()
