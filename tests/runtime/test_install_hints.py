"""How a missing TensorRT or pycuda is to be got, on a Jetson and elsewhere, and that the hints match setup.cfg."""

import configparser
import os
import re

import pytest

from edgetool.runtime import machine
from edgetool.runtime.choices import PLATFORM_EXTRAS, install_hint
from edgetool.runtime.errors import MissingDependencyError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRT_ELSEWHERE = (
    "tensorrt is not installed; TensorRT comes with JetPack on a Jetson (pip install tensorrt on an x86 machine "
    "with an NVIDIA GPU)"
)
TRT_JETSON = (
    "tensorrt is not installed; TensorRT comes with JetPack (a virtualenv sees JetPack's TensorRT only when made "
    "with --system-site-packages)"
)


def extras():
    """setup.cfg's extras: name -> the distribution names they install."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    out = {}
    for name, value in cfg["options.extras_require"].items():
        out[name] = {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower() for line in value.splitlines()}
        out[name].discard("")
    return out


@pytest.mark.parametrize("jetson", [True, False])
def test_hints_per_platform(monkeypatch, jetson):
    monkeypatch.setattr(machine, "is_jetson", lambda: jetson)
    assert str(MissingDependencyError("tensorrt")) == (TRT_JETSON if jetson else TRT_ELSEWHERE)
    extra = "jetson" if jetson else "gpu"
    want = "pycuda.driver is not installed; install it with: pip install 'edgetool[{}]'".format(extra)
    assert str(MissingDependencyError("pycuda.driver")) == want
    assert (
        str(MissingDependencyError("onnxruntime"))
        == "onnxruntime is not installed; install it with: pip install 'edgetool[cpu]'"
    )
    assert str(MissingDependencyError("cv2 (OpenCV)", "camera")).endswith("pip install 'edgetool[camera]'")
    assert MissingDependencyError("left_pad").hint is None


def test_the_extras_named_hold_the_module_and_none_installs_tensorrt():
    have = extras()
    for module, per_platform in PLATFORM_EXTRAS.items():
        for extra in per_platform.values():
            assert module in have[extra], (module, extra)
    assert not [name for name, dists in have.items() if any(d.startswith("tensorrt") for d in dists)]
    for jetson in (True, False):
        assert "edgetool[" not in install_hint("tensorrt", jetson)


def test_a_jetson_is_told_apart(monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "L4T_RELEASE", str(tmp_path / "nv_tegra_release"))
    monkeypatch.setattr(machine, "device_tree_model", lambda: "")
    assert not machine.is_jetson()
    monkeypatch.setattr(machine, "device_tree_model", lambda: "NVIDIA Jetson AGX Orin Developer Kit")
    assert machine.is_jetson()
    monkeypatch.setattr(machine, "device_tree_model", lambda: "")
    (tmp_path / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    assert machine.is_jetson()


def test_doctor_names_the_extra_with_pycuda_for_this_machine(run_cli):
    try:
        import pycuda  # noqa: F401

        pytest.skip("pycuda is installed here")
    except ImportError:
        pass
    extra = "jetson" if machine.is_jetson() else "gpu"
    proc = run_cli("doctor")
    assert proc.returncode == 0, proc.stderr
    gpu = [line for line in proc.stdout.splitlines() if line.startswith("[SKIP] gpu")]
    assert gpu and gpu[0].endswith(
        "pycuda is not installed (install it with: pip install 'edgetool[{}]')".format(extra)
    )
