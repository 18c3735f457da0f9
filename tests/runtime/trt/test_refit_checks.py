"""Doctor's refit checks and --verify-switch, on the CPU: the golden batch after each refit and after the first
switch to each network against ONNX Runtime, and the refit penalty's build and arithmetic.

The "device" here is ONNX Runtime made to go wrong on purpose (a stuck output, a refit that did not take), or
the recording TensorRT stand-in of trt_fakes; the figures of a real device are a device's to give."""

import shutil

import numpy as np
import pytest

from edgetool.cli import main
from edgetool.runtime.backends.base import BASE
from edgetool.runtime.bundle.reader import Bundle

import trt_fakes

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from edgetool.runtime.backends.ort import OrtBackend  # noqa: E402
from edgetool.runtime.backends.verify import Reference, SwitchVerifier, VerifyError, compare  # noqa: E402


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("refitchecks")
    path = trt_fakes.touched_bundle(root / "b", [["stem.weight", "fc.bias"], ["s2.b1.conv1.weight"]], seed=5)
    images = root / "images"
    images.mkdir()
    from PIL import Image

    rng = np.random.RandomState(0)
    for i in range(3):
        Image.fromarray(rng.randint(0, 256, (28, 28), dtype=np.uint8), "L").save(images / "f{}.png".format(i))
    return path, str(images)


class Drifting(OrtBackend):
    """ONNX Runtime gone wrong on purpose: from the *after*-th weight change on, network *target* (None: every
    network) gives its logits negated; "refit" times are recorded as a device backend's are."""

    def __init__(self, bundle, target=BASE, after=1):
        super().__init__(bundle)
        self.drift_target, self.after, self.applied = target, after, 0

    def _apply(self, delta):
        super()._apply(delta)
        self.applied += 1
        self.timings.add("refit", 0.5)

    def _infer(self, batch):
        out = super()._infer(batch)
        if self.applied >= self.after and self.drift_target in (None, self.current):
            out = -out  # every top-1 becomes the last
        return out


def test_compare_reads_only_the_network_rows():
    ref = np.array([[1.0, 0.0, 9.0], [0.0, 2.0, -9.0]])
    assert compare(ref, ref, 2) == (True, 0.0)
    agree, rel = compare(ref + [[0.0, 1.5, 0.0], [0.0, 0.0, 0.0]], ref, 2)
    assert not agree and rel == pytest.approx(0.75)
    assert compare(ref + [[0.0, 0.0, 50.0], [0.0, 0.0, 0.0]], ref, 2) == (True, 0.0)  # row 2 is not this network's


def test_the_first_switch_to_each_network_is_checked_once(made):
    b = Bundle.open(made[0])
    lines = []
    with SwitchVerifier(OrtBackend(b), Reference(b, b.samples()), report=lines.append) as be:
        for target in [BASE, 0, BASE, 1, 0, 1, BASE]:
            be.switch(target)
        assert sorted(be.verified) == [BASE, 0, 1] and len(lines) == 3
        assert sorted(be.reference.cache) == [BASE, 0, 1]
        assert lines[1].startswith("verify-switch: subclass network 0 (a) on onnxruntime, 4 samples: top-1 agrees")
    with SwitchVerifier(Drifting(b, target=1), Reference(b, b.samples())) as be:
        be.switch(0)
        with pytest.raises(VerifyError, match=r"subclass network 1 \(b\) .* top-1 DISAGREES.*limit 5%"):
            be.switch(1)


def run(capsys, *args):
    with pytest.raises(SystemExit) as code:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return code.value.code, out.out, out.err.strip().splitlines()


@pytest.mark.parametrize("command", ["classify", "camera"])
def test_verify_switch_on_the_command_line(monkeypatch, capsys, made, command, tmp_path):
    from edgetool.runtime import backends

    path, images = made
    bundle = str(tmp_path / "b")
    shutil.copytree(path, bundle)
    args = [command, bundle, images] + (["--headless", "--json"] if command == "camera" else ["--json"])
    monkeypatch.setattr(backends, "load_backend", lambda name, b, **kw: Drifting(b, target=None, after=99))
    code, out, err = run(capsys, *args, "--verify-switch")
    assert code == 0, err
    assert any(
        line.startswith("verify-switch: the base network on onnxruntime, 4 samples: top-1 agrees") for line in err
    )
    monkeypatch.setattr(backends, "load_backend", lambda name, b, **kw: Drifting(b, target=BASE, after=0))
    code, out, err = run(capsys, *args, "--verify-switch")
    assert code == 1 and [line for line in err if line.startswith("error:")] == err[-1:], err
    assert err[-1].startswith("error: verify-switch: the base network on onnxruntime, 4 samples: top-1")
    assert err[-1].endswith("(limit 5%): its outputs are not the network's")
    code, out, err = run(capsys, *args)  # without the option, nothing is checked
    assert code == 0 and not any("verify-switch" in line for line in err)


def test_verify_switch_needs_samples(monkeypatch, capsys, made, tmp_path):
    import json

    bundle = str(tmp_path / "b")
    shutil.copytree(made[0], bundle)
    with open(bundle + "/manifest.json") as f:
        m = json.load(f)
    del m["samples"]
    with open(bundle + "/manifest.json", "w") as f:
        json.dump(m, f)
    code, _, err = run(capsys, "classify", bundle, made[1], "--verify-switch")
    assert code == 2 and err == [
        "error: --verify-switch compares on the bundle's samples.npy, and this bundle has none"
    ]


@pytest.mark.parametrize("drift", [None, 3])
def test_doctor_checks_the_samples_after_every_refit(made, drift):
    from edgetool.runtime.doctor import ort_reference
    from edgetool.runtime.doctor_trt import refit_timing

    b = Bundle.open(made[0])
    lines = []
    add = lambda *a: lines.append(a)  # noqa: E731
    reference = ort_reference(add, b, b.samples())
    with Drifting(b, target=None, after=drift or 10**6) as be:
        refit_timing(add, be, b, 6, b.samples(), reference)
        assert be.applied == 6
    name, status, detail = lines[-1]
    assert name == "refit timing" and detail.startswith("refit: mean 0.500 ms, median 0.500 ms")
    assert "over 6 switches" in detail
    if drift is None:
        assert status == "PASS" and "the samples after each refit match ONNX Runtime's" in detail
    else:  # the 3rd refit (the base network: the cycle is 0, 1, base) and every one after it
        assert status == "FAIL" and "DIFFER FROM ONNX Runtime's" in detail
        assert detail.endswith(": refit 3 (the base network), refit 4 (subclass network 0 (a)), "
                               "refit 5 (subclass network 1 (b)), refit 6 (the base network)")  # fmt: skip


def test_the_penalty_is_the_ratio_of_medians():
    from edgetool.runtime.trt.penalty import TARGET, median_ms, refit_penalty, verdict

    ticks = iter(np.cumsum([0, 2, 0, 4, 0, 3, 0, 100]) / 1e3)  # runs of 2, 4, 3 ms after one untimed warmup
    assert median_ms(lambda: None, iterations=3, warmup=1, clock=lambda: next(ticks)) == pytest.approx(3.0)
    assert verdict(1.04, 1.0)["within"] and not verdict(1.06, 1.0)["within"] and TARGET == 1.05
    assert verdict(2.0, 1.0)["ratio"] == 2.0
    batch = np.zeros((3, 1, 28, 28), np.float32)
    calls = []

    class Engine:
        def __init__(self, name):
            self.name = name

        def run(self, x):
            calls.append((self.name, len(x)))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            calls.append((self.name, "deactivated"))

    be = type("Be", (), {"sub": Engine("refittable")})()
    p = refit_penalty(be, batch, make_fixed=lambda be: Engine("fixed"), iterations=4)
    assert p["batch"] == 3 and p["iterations"] == 4 and p["ratio"] > 0
    assert calls.count(("refittable", 3)) == calls.count(("fixed", 3)) == 4 + 5  # 5 warmup runs each
    assert calls[-1] == ("fixed", "deactivated")  # the reference engine's buffers are freed after the timing


@pytest.mark.parametrize("version, form", [("8.6.1", "qdq-float"), ("10.3.0", "int8")])
def test_the_penalty_reference_engine_is_the_same_engine_without_refit(monkeypatch, made, tmp_path, version, form):
    from edgetool.runtime.trt.backend import TrtBackend
    from edgetool.runtime.trt.penalty import fixed_runner, refit_penalty

    trt = trt_fakes.install(monkeypatch, version)
    with TrtBackend.from_bundle(Bundle.open(made[0]), max_batch=8, workspace_mb=256) as be:
        fixed = fixed_runner(be)
        (_, refit_config), (network, config) = trt.builds
        assert [f for f in refit_config.flags if "REFIT" in f] != []
        assert not [f for f in config.flags if "REFIT" in f] and network.marked == []
        assert [f for f in config.flags if "REFIT" not in f] == [f for f in refit_config.flags if "REFIT" not in f]
        assert config.pools == refit_config.pools == {"WORKSPACE": 256 << 20}
        assert config.profiles[0].shapes == refit_config.profiles[0].shapes
        assert fixed.engine is None and fixed.activate().engine.refittable == [] and fixed.static is False
        assert be.form == form
        p = refit_penalty(be, Bundle.open(made[0]).samples(), make_fixed=lambda be: fixed, iterations=2)
        assert fixed.runs == be.sub.runs == 7 and p["batch"] == 4 and not fixed.active and fixed.engine is None


def test_doctor_reports_the_penalty_as_a_figure_with_its_target(monkeypatch):
    from edgetool.runtime import doctor_trt
    from edgetool.runtime.trt import penalty

    lines = []
    monkeypatch.setattr(penalty, "refit_penalty", lambda be, x: dict(penalty.verdict(1.1, 1.0), batch=8, iterations=50))
    doctor_trt.penalty_check(lambda *a: lines.append(a), None, None)
    assert lines[-1] == (
        "refit penalty",
        "INFO",
        "refittable 1.100 ms / non-refittable 1.000 ms per batch of 8 (medians of 50) = 1.100, ABOVE the 1.05 target",
    )

    def fails(be, x):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(penalty, "refit_penalty", fails)
    doctor_trt.penalty_check(lambda *a: lines.append(a), None, None)
    assert lines[-1] == ("refit penalty", "FAIL", "non-refittable reference engine: RuntimeError: out of memory")
