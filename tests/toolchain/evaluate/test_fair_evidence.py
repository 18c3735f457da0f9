"""The fair comparison: image passes and FLOPs counted by hand, both flat controls' budgets,
validation-only choices, the verdict both ways with its interval, and runs that keep their word."""

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import run_cli  # noqa: E402
from edgetool.toolchain.evaluate import bounds, verdict  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.fc = torch.nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_flops_per_image_by_hand():
    # conv: 2 x 4 x 4 outputs, each 3 x 3 x 1 multiply-accumulates; fc: 3 outputs x 32 inputs
    assert bounds.flops_per_image(Tiny(), (1, 4, 4)) == 2 * (2 * 4 * 4 * 9 + 3 * 32)


def fake_run(n_train=100, sizes=(30, 50, 20), **cfg):
    settings = dict(epochs=8, base_epochs=3, base_init="flat", ft_epochs=10, qat_epochs=2)
    settings.update(cfg)
    return SimpleNamespace(
        cfg=SimpleNamespace(**settings),
        ytr=np.zeros(n_train),
        hier=SimpleNamespace(n_super=len(sizes)),
        fine_tune_size=lambda k: sizes[k],
    )


def test_image_passes_by_hand():
    p = bounds.image_passes(fake_run())
    assert p == {
        "flat": 800,
        "superclass": 300,
        "vanilla_subclass": 1000,
        "qat_superclass": 200,
        "qat_subclass": 1000,
        "total": 3300,
    }
    assert bounds.equal_budget_epochs(fake_run()) == 33
    # a base from scratch trains for the flat network's epochs; the total rounds up to whole epochs
    assert bounds.image_passes(fake_run(base_init="scratch"))["superclass"] == 800
    assert bounds.equal_budget_epochs(fake_run(n_train=1000)) == 15  # 15,000 passes over 1,000 images


def test_controls_train_for_the_pipeline_budget(tiny_run, monkeypatch):
    """Each control's fp32 epochs plus its QAT epochs cover the pipeline's image passes; the wide
    one's FLOPs are the closest to a superclass plus a subclass inference."""
    from edgetool.toolchain.train import run as pipeline

    seen = []
    real_fit = pipeline.training.fit

    def counting_fit(model, x, y, recipe, **kw):
        seen.append((type(model).__name__, recipe.epochs * len(y)))
        return real_fit(model, x, y, recipe, **kw)

    monkeypatch.setattr(pipeline.training, "fit", counting_fit)
    for f in os.listdir(tiny_run.file("controls")) if os.path.isdir(tiny_run.file("controls")) else []:
        os.remove(tiny_run.file("controls", f))
    for k in range(tiny_run.hier.n_super):  # the passes are counted without building the fine-tune sets
        assert tiny_run.fine_tune_size(k) == len(tiny_run.fine_tune_data(k)[1])
    total = bounds.image_passes(tiny_run)["total"]
    n = len(tiny_run.ytr)
    for kind in ("budget", "wide"):
        seen.clear()
        tiny_run.flat_control(kind)
        passes = sum(p for _, p in seen)
        assert total <= passes < total + n, (kind, seen)
        assert [m for m, _ in seen] == ["ResNet", "QATNet"]
    flops = bounds.inference_flops(tiny_run)
    w = bounds.equal_cost_width(tiny_run)
    assert w > 1.0 and abs(flops["flat_wide"] - flops["super_sub"]) < 0.1 * flops["super_sub"]
    # a changed budget never reuses a control trained for another
    from edgetool.toolchain.train.controls import control_file

    assert "-e{}".format(bounds.equal_budget_epochs(tiny_run)) in control_file(tiny_run, "budget")


class SplitRead(Exception):
    pass


class Guarded:
    """A tensor stand-in that raises when anything reads it."""

    def __getattr__(self, name):
        raise SplitRead(name)

    def __len__(self):
        raise SplitRead("len")

    def __getitem__(self, i):
        raise SplitRead("getitem")


def test_control_choice_reads_only_the_validation_split(tmp_path):
    from edgetool.toolchain.train.run import Run, TrainConfig

    cfg = TrainConfig(
        epochs=1, base_epochs=1, ft_epochs=1, qat_epochs=1, limit_train=600, limit_test=100, batch=64, val_fraction=0.2
    )
    run = Run.open(str(tmp_path / "run"), cfg, progress=False)
    xte, yte = run.xte, run.yte
    run.xte, run.yte = Guarded(), Guarded()
    scores = bounds.control_validation(run)  # trains both controls and scores them: no test image read
    assert set(scores) == {"flat_budget", "flat_wide"} and all(0 <= v <= 1 for v in scores.values())
    run.train_all()
    manifest = run.export(str(tmp_path / "bundle"))  # the routing choice: on the validation split only
    assert "validation split" in manifest["routing"]["chosen_on"]
    run.xte, run.yte = xte, yte
    m = bounds.measure(run, str(tmp_path / "bundle"), manifest)  # the final measurement reads the test split
    assert m["verdict"]["validation"] == scores and "validation split" in m["verdict"]["chosen_on"]
    with pytest.raises(SplitRead):
        len(Guarded())  # the guard does fire


def test_verdict_pays_off_with_interval():
    eff = np.r_[np.ones(900), np.zeros(100)].astype(bool)
    flat = np.r_[np.ones(800), np.zeros(200)].astype(bool)
    v = verdict.decide([eff], {"flat_budget": [flat], "flat_wide": [flat.copy()]}, None, "RUN")
    assert v["pays_off"] and v["command"] is None
    assert v["difference"] == pytest.approx(0.10)
    lo, hi = v["ci95"]
    assert 0.07 < lo < 0.10 < hi < 0.13  # paired: the 100 images where only efficient is right
    assert v["message"].startswith("Super-Sub pays off on this data: efficient - best flat control")


def test_verdict_ship_flat_and_choice_on_validation():
    rng = np.random.default_rng(0)
    base = rng.random(1500) < 0.87
    wide = base.copy()
    wide[:30] = True  # the wide control is better on test ...
    v = verdict.decide([base], {"flat_budget": [base], "flat_wide": [wide]}, {"flat_budget": 0.9, "flat_wide": 0.8})
    assert v["best_control"] == "flat_budget"  # ... but the validation split chose the other
    assert not v["pays_off"] and v["difference"] == 0.0 and v["ci95"] == [0.0, 0.0]
    assert "ship it with `edgetool export RUN --out RUN-flat --model flat`" in v["message"]
    v = verdict.decide([base], {"flat_budget": [base], "flat_wide": [wide]}, None)
    assert v["best_control"] == "flat_wide"
    assert v["command"] == "edgetool export RUN --out RUN-flat-wide --model flat-wide"
    assert "test split" in v["chosen_on"]


def test_verdict_pools_seeds_and_refuses_unpaired():
    a = [np.array([1, 1, 0, 1], bool), np.array([1, 0], bool)]
    b = [np.array([1, 0, 0, 1], bool), np.array([0, 0], bool)]
    d, lo, hi = verdict.paired_interval(a, b)
    assert d == pytest.approx(2 / 6) and lo <= d <= hi
    with pytest.raises(ValueError):
        verdict.paired_interval([np.ones(3)], [np.ones(4)])


# -- runs keep their word -------------------------------------------------------------------------
def tiny_flags(data_limit="600"):
    return ["--epochs", "1", "--base-epochs", "1", "--ft-epochs", "1", "--qat-epochs", "1", "--batch", "64",
            "--limit-train", data_limit, "--limit-test", "100"]  # fmt: skip


def test_changed_setting_on_a_trained_run_is_refused_and_from_reuses(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", run, *tiny_flags(), "--modes", "flat,superclass")
    assert proc.returncode == 0, proc.stderr
    before = (run / "config.json").read_text()
    # the delta budget shapes only the QAT subclass networks, none trained yet: accepted
    proc = run_cli("train", run, "--delta-budget", "0.1", "--modes", "superclass")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.json").read_text())["delta_budget"] == "0.1"
    # the flat network's epochs shape everything trained: refused, nothing changed
    before = (run / "config.json").read_text()
    proc = run_cli("train", run, "--epochs", "2")
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "epochs 1 -> 2" in proc.stderr and "flat, superclass" in proc.stderr and "--from" in proc.stderr
    assert (run / "config.json").read_text() == before
    # --from: a new run with a new QAT setting reuses the flat and superclass networks
    new = tmp_path / "new"
    proc = run_cli("train", new, "--from", run, "--qat-lr", "0.002", "--modes", "qat")
    assert proc.returncode == 0, proc.stderr
    assert "reused from" in proc.stderr and "flat.pt" in proc.stderr and "super.pt" in proc.stderr
    assert (run / "flat.pt").read_bytes() == (new / "flat.pt").read_bytes()
    assert "stage flat: training" not in proc.stderr
    assert json.loads((new / "config.json").read_text())["qat_lr"] == 0.002
    proc = run_cli("train", new, "--from", run)
    assert proc.returncode != 0 and "already a run" in proc.stderr


def test_changing_the_budget_after_qat_is_refused(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", run, *tiny_flags()).returncode == 0
    proc = run_cli("train", run, "--delta-budget", "0.2")
    assert proc.returncode != 0 and "delta_budget '0.05' -> '0.2'" in proc.stderr and "qat" in proc.stderr
    proc = run_cli("evaluate", run, "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["delta_budget"] == "0.05"  # the budget its deltas were made with
    assert "verdict: " in proc.stdout and set(rep["cost"]) >= {"efficient", "flat_budget", "flat_wide"}
    shutil.rmtree(run)
