"""``--dla-core``: the option's checks against the device profile, the trtexec line, the DLA build steps (TensorRT
replaced by the recording stand-in of trt_fakes), the static-batch runner and doctor's DLA line.

Nothing here has run on a DLA: where the layers land is a device's to tell."""

import json
import shutil

import numpy as np
import pytest

from edgetool.cli import main
from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.errors import UsageError
from edgetool.runtime.trt.commands import resolve_dla_core, trtexec_args
from edgetool.runtime.trt.runner import in_static_batches

import trt_fakes

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return trt_fakes.touched_bundle(tmp_path_factory.mktemp("dla") / "b", [["stem.weight"], ["fc.bias"]])


@pytest.fixture
def bundle(made, tmp_path):
    dst = str(tmp_path / "bundle")
    shutil.copytree(made, dst)
    return dst


def profile(name):
    from edgetool.runtime.device_profiles import load

    return load(name)


def test_the_core_comes_from_the_profile_only_when_asked_for():
    agx, nx, nano = profile("orin-agx"), profile("orin-nx"), profile("orin-nano")
    assert agx["dla"] == nx["dla"] == 2 and nano["dla"] == 0
    assert resolve_dla_core(None, agx) is None  # no DLA unless asked for
    assert resolve_dla_core("auto", nx) == 0 and resolve_dla_core("1", agx) == 1
    for value, p, why in [
        ("2", agx, "--dla-core 2: device profile orin-agx has 2 DLA core(s), numbered 0..1"),
        ("-1", nx, "--dla-core -1: device profile orin-nx has 2 DLA core(s), numbered 0..1"),
        ("auto", nano, "--dla-core auto: device profile orin-nano has no DLA"),
        ("0", nano, "--dla-core 0: device profile orin-nano has no DLA"),
        ("one", agx, "--dla-core takes a DLA core number or auto, got 'one'"),
    ]:
        with pytest.raises(UsageError) as exc:
            resolve_dla_core(value, p)
        assert str(exc.value) == why


def cli(capsys, *args):
    with pytest.raises(SystemExit) as code:
        main(list(args))
    out = capsys.readouterr()
    return code.value.code, out.out, out.err.strip().splitlines()


@pytest.mark.parametrize(
    "args, why",
    [
        (["--device-profile", "orin-agx", "--dla-core", "2"], "has 2 DLA core(s), numbered 0..1"),
        (["--device-profile", "orin-nano", "--dla-core", "auto"], "device profile orin-nano has no DLA"),
    ],
)
@pytest.mark.parametrize("command", ["build", "onnx"])
def test_a_core_outside_the_profile_is_one_error_line_before_any_work(capsys, bundle, tmp_path, args, why, command):
    out = tmp_path / "engine.onnx"
    where = [bundle] if command == "build" else [bundle, str(out), "--weights", "int8"]
    code, _, err = cli(capsys, "engine", command, *where, *args)  # no TensorRT here: the DLA check comes first
    assert code != 0 and len(err) == 1 and err[0].startswith("error: --dla-core ") and why in err[0], err
    assert not out.exists()


def test_engine_onnx_prints_the_dla_trtexec_line(capsys, bundle, tmp_path):
    out = str(tmp_path / "engine.onnx")
    base = ["engine", "onnx", bundle, out, "--weights", "int8", "--device-profile", "orin-nx"]
    code, text, _ = cli(capsys, *base, "--dla-core", "auto")
    assert code == 0
    trtexec = text.splitlines()[1]
    assert trtexec.endswith(" --refit --useDLACore=0 --allowGPUFallback"), trtexec
    for key in ("min", "opt", "max"):  # the DLA takes static shapes: one batch
        assert "--{}Shapes=input:1x1x28x28".format(key) in trtexec
    code, text, _ = cli(capsys, *base)
    trtexec = text.splitlines()[1]
    assert code == 0 and "DLA" not in trtexec and "--minShapes=input:1x1x28x28" in trtexec
    assert "--maxShapes=input:{}x1x28x28".format(profile("orin-nx")["max_batch"]) in trtexec
    args = trtexec_args("m.onnx", "x", (3, 8, 8), "int8", 4, 64, strongly_typed=True, dla_core=1)
    assert args[3:6] == ["--minShapes=x:4x3x8x8", "--optShapes=x:4x3x8x8", "--maxShapes=x:4x3x8x8"]
    assert args[-4:] == ["--stronglyTyped", "--refit", "--useDLACore=1", "--allowGPUFallback"]


def test_engine_build_on_a_dla_core(monkeypatch, capsys, bundle):
    trt = trt_fakes.install(monkeypatch, "10.3.0", dla_cores=2)
    code, text, err = cli(capsys, "-v", "engine", "build", bundle, "--device-profile", "orin-agx", "--dla-core", "1")
    assert code == 0, err
    ((network, config),) = trt.builds
    assert config.default_device_type == "DLA" and config.DLA_core == 1
    assert config.pools == {"WORKSPACE": profile("orin-agx")["workspace_mb"] << 20}
    assert config.flags == ["REFIT_INDIVIDUAL", "GPU_FALLBACK"]
    ((_, low, opt, high),) = config.profiles[0].shapes
    assert low == opt == high == (1, 1, 28, 28)  # static: the DLA takes one batch size
    assert "DLA core 1 with GPU fallback, batch 1" in text
    logged = [line for line in err if "the same build with trtexec" in line]
    assert len(logged) == 1 and logged[0].endswith("--refit --useDLACore=1 --allowGPUFallback"), err
    (entry,) = Bundle.open(bundle).manifest["engines"]
    assert (entry["dla_core"], entry["static_batch"], entry["max_batch"]) == (1, True, 1)
    code, _, err = cli(capsys, "engine", "build", bundle, "--device-profile", "orin-agx", "--max-batch", "4")
    (entry,) = Bundle.open(bundle).manifest["engines"]  # a GPU engine replaces it
    assert code == 0 and "dla_core" not in entry and entry["max_batch"] == 4
    assert trt.builds[-1][1].default_device_type == "GPU" and "GPU_FALLBACK" not in trt.builds[-1][1].flags


def test_a_device_with_fewer_dla_cores_than_the_profile_is_refused(monkeypatch, capsys, bundle):
    trt_fakes.install(monkeypatch, "8.6.1", dla_cores=1)
    code, _, err = cli(capsys, "engine", "build", bundle, "--device-profile", "orin-agx", "--dla-core", "1")
    assert code != 0 and err == ["error: DLA core 1 asked for, and this device has 1 DLA core(s)"]


@pytest.mark.parametrize("rows", [0, 1, 3, 4, 5, 9])
@pytest.mark.parametrize("features", [False, True])
def test_a_static_batch_engine_runs_any_batch_in_padded_runs(rows, features):
    size, w = 4, np.arange(12, dtype=np.float32).reshape(3, 4)
    calls = []

    def run(part):  # the engine: exactly `size` rows, every time
        assert part.shape == (size, 3) and part.flags.c_contiguous
        calls.append(part.copy())
        return dict(logits=part @ w, **({"features": part * 2} if features else {}))

    x = np.random.RandomState(rows).rand(rows, 3).astype(np.float32)
    got = in_static_batches(run, x, size)
    assert sorted(got) == (["features", "logits"] if features else ["logits"])
    np.testing.assert_allclose(got["logits"], x @ w, rtol=1e-6)
    assert got["logits"].shape == (rows, 4) and len(calls) == max(1, -(-rows // size))
    if features:
        np.testing.assert_array_equal(got["features"], x * 2)
    if rows % size:
        assert not calls[-1][rows % size :].any()  # zero padding


def test_doctor_reports_the_dla_engine_and_says_where_layers_run_is_unverified(monkeypatch, capsys, bundle):
    from edgetool.runtime.doctor_trt import dla_report
    from edgetool.runtime.trt.backend import TrtBackend

    trt_fakes.install(monkeypatch, "10.3.0", dla_cores=2)
    assert cli(capsys, "engine", "build", bundle, "--device-profile", "orin-agx", "--dla-core", "auto")[0] == 0
    lines = []
    with TrtBackend.from_bundle(Bundle.open(bundle), precision="int8") as be:
        assert be.sub.static and be.max_batch == 1  # the runner pads to the engine's one batch
        dla_report(lambda *a: lines.append(a), be)
        n = len(be.sub.engine.plan["weights"])
    ((name, status, detail),) = lines
    assert (name, status) == ("dla", "INFO")
    assert detail.startswith("engine for DLA core 0 with GPU fallback, batch 1; {} layers listed".format(n))
    assert "which layers run on the DLA: unverified" in detail


def test_the_inspector_reads_names_and_detailed_layers(monkeypatch):
    from types import SimpleNamespace

    from edgetool.runtime.doctor_trt import dla_report
    from edgetool.runtime.trt.runner import EngineRunner

    trt = SimpleNamespace(LayerInformationFormat=SimpleNamespace(JSON="JSON"))
    info = json.dumps({"Layers": ["conv", {"Name": "fc", "LayerType": "CaskGemm"}]})
    engine = SimpleNamespace(create_engine_inspector=lambda: SimpleNamespace(get_engine_information=lambda f: info))
    r = EngineRunner(engine, trt, None, None, "input", "logits", (1, 28, 28), 4, 1, static=True)  # not activated
    assert r.layer_names() == ["conv", "fc"]
    r.engine = SimpleNamespace()
    assert r.layer_names() is None
    lines = []
    be = SimpleNamespace(engine_entry={"dla_core": 1, "max_batch": 2}, sub=r)
    dla_report(lambda *a: lines.append(a), be)
    assert "no engine inspector in this TensorRT; which layers run on the DLA: unverified" in lines[0][2]
    be.engine_entry = {"max_batch": 2}  # a GPU engine: no line
    dla_report(lambda *a: lines.append(a), be)
    assert len(lines) == 1
