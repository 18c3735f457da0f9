"""``edgetool doctor`` and the device profiles."""

import json
import os

import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


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


def test_doctor_without_gpu_reports_skips(run_cli, tiny_bundle):
    from edgetool.runtime.machine import gpu_info

    if gpu_info()["available"]:
        pytest.skip("this machine has a GPU; the no-GPU report is checked elsewhere")
    proc = run_cli("doctor", tiny_bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("[PASS] bundle") for line in lines)
    assert any(line.startswith("[PASS] onnxruntime") for line in lines)
    assert any(line.startswith("[SKIP] cuda kernel") and "no GPU" in line for line in lines)
    for form in ("int8", "qdq-float", "fp16"):  # without TensorRT every form is proven on the CPU
        want = "[PASS] weight form " + form
        assert any(line.startswith(want) and "equal each network" in line for line in lines), lines
    assert any(line.startswith("[SKIP] tensorrt") for line in lines)
    assert "could not run here:" in lines[-1]
    js = run_cli("doctor", tiny_bundle, "--json")
    statuses = {c["check"]: c["status"] for c in json.loads(js.stdout)}
    assert statuses["onnxruntime"] == "PASS" and statuses["cuda kernel"] == "SKIP"


def test_doctor_fails_on_corrupt_bundle(run_cli, bundle_copy):
    with open(os.path.join(bundle_copy, "base.onnx"), "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    proc = run_cli("doctor", bundle_copy)
    assert proc.returncode != 0
    assert any(line.startswith("[FAIL] bundle") and "base.onnx" in line for line in proc.stdout.splitlines())
    assert proc.stderr.strip().splitlines() == ["error: doctor: 1 check(s) failed: bundle"]
