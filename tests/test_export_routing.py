"""The bundle carries the gated top-k routing chosen on the validation split, and the runtime uses it."""

import json
import logging

import pytest

from edgetool.runtime.bundle import routing as R
from edgetool.cli import main


def _inspect(bundle, capsys):
    with pytest.raises(SystemExit) as code:
        main(["inspect", str(bundle)])
    out = capsys.readouterr()
    assert code.value.code == 0, out.err
    return [line for line in out.out.splitlines() if line.startswith("routing")]


def test_export_chooses_the_routing_on_the_validation_split(tmp_path, capsys):
    pytest.importorskip("torch")
    from edgetool.toolchain.routing import search as routing_eval
    from edgetool.toolchain.train import fit as training
    from edgetool.toolchain.train.run import Run, TrainConfig

    cfg = TrainConfig(
        epochs=1, base_epochs=1, ft_epochs=1, qat_epochs=1, limit_train=800, limit_test=100, batch=64, seed=2
    )
    cfg.val_fraction = 0.25
    run = Run.open(str(tmp_path / "run"), cfg, progress=False)
    records = []
    keep = logging.Handler(logging.WARNING)
    keep.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("edgetool")  # its own handler: the edgetool logger may not propagate
    level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.WARNING)
    try:
        m = run.export(str(tmp_path / "bundle"))
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    r = m["routing"]
    warned = [rec.getMessage() for rec in records]
    assert warned == [
        "the routing (gate {:g}, beta {:g}) was chosen on 200 images of the validation split, too few stage-1 "
        "errors to choose surely; a larger --val-fraction at train time gives more (1000 or more)".format(
            r["gate"], r["beta"]
        )
    ]
    assert r["k"] == 2 and r["gate"] in routing_eval.GATES and r["beta"] in routing_eval.BETAS
    assert r["chosen_on"].startswith("validation split (200 images)")
    # the choice is the best validation accuracy under the switch budget, with the int8 networks
    base, subs = run.super_qat(), [run.sub_qat(k) for k in range(run.hier.n_super)]
    xv, yv = training.to_tensor(run.data.val, run.mean, run.std), run.data.val.labels
    p, qs = routing_eval.network_probs(run, subs, xv, base)
    members = run.hier.members(run.train.classes)
    best = max(
        routing_eval.policy(p, qs, members, run.data.local, yv, g, 2, b)["accuracy"]
        for b in routing_eval.BETAS
        for g in routing_eval.GATES
        if routing_eval.policy(p, qs, members, run.data.local, yv, g, 2, b)["extra_switches_per_image"] <= 0.2
    )
    chosen = routing_eval.policy(p, qs, members, run.data.local, yv, r["gate"], 2, r["beta"])
    assert chosen["accuracy"] == best and chosen["extra_switches_per_image"] <= 0.2
    line = _inspect(tmp_path / "bundle", capsys)
    assert line == ["routing     topk: gate {:g}, k 2, beta {:g} ({})".format(r["gate"], r["beta"], r["chosen_on"])]


def test_a_bundle_without_routing_gets_the_defaults(tiny_bundle, capsys):
    assert "routing" not in json.loads(open(tiny_bundle + "/manifest.json").read())  # the run has no validation split
    assert _inspect(tiny_bundle, capsys) == ["routing     topk: gate 0.6, k 2, beta 1 (default)"]


def test_classify_uses_the_bundles_routing_and_the_options_override_it(bundle_copy, sample_pngs, run_cli):
    path = bundle_copy + "/manifest.json"
    m = json.loads(open(path).read())
    m["routing"] = {"gate": 1.0, "k": 2, "beta": 0.0, "chosen_on": "validation split (test)"}
    open(path, "w").write(json.dumps(m))
    proc = run_cli("classify", bundle_copy, *sample_pngs, "--policy", "topk", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "routing: topk gate 1, k 2, beta 0 (validation split (test))"
    stored = [json.loads(line) for line in proc.stdout.splitlines()]
    proc = run_cli("classify", bundle_copy, *sample_pngs, "--policy", "topk", "--json", "--beta", "1", "--gate", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert "gate 0.3, k 2, beta 1 (validation split (test); set by the caller: gate, beta)" in proc.stderr
    over = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(stored) == len(over) == len(sample_pngs)
    # beta 0 under gate 1: both routes tried, the surer subclass network kept, so never less sure than top-1
    proc = run_cli("classify", bundle_copy, *sample_pngs, "--policy", "per-image", "--json")
    top1 = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all(s["p_sub"] >= t["p_sub"] - 1e-6 for s, t in zip(stored, top1))
    for bad, needle in ((("--gate", "2"), "--gate must be in [0, 1]"), (("--beta", "-1"), "--beta must be in")):
        proc = run_cli("classify", bundle_copy, *sample_pngs, "--policy", "topk", *bad)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_routing_settings_round_trip():
    r = R.Routing(0.8, 2, 0.25, "validation split (9 images)")
    assert R.parse(json.loads(json.dumps(r.to_dict())), 2) == r
