"""A learned hierarchy with overlapping clusters through the normal CLI: train, export, evaluate, classify."""

import json

import pytest

pytest.importorskip("scipy")

from edgetool.toolchain.hierarchy import spec as H  # noqa: E402


@pytest.mark.slow
def test_learned_from_a_run_trains_and_exports_with_overlap(run_cli, tmp_path, sample_pngs):
    """A flat network's validation confusion -> hierarchy (with overlap) -> train -> export -> classify."""
    pytest.importorskip("torch")
    tiny = ["--limit-train", "1500", "--limit-test", "200", "--batch", "64", "--epochs", "2"]
    flat = tmp_path / "flat"
    proc = run_cli("train", flat, *tiny, "--val-fraction", "0.2", "--modes", "flat")
    assert proc.returncode == 0, proc.stderr
    hfile = tmp_path / "learned.json"
    proc = run_cli("hierarchy", "learn", flat, "-o", hfile, "--theta", "4", "--gamma", "3")
    assert proc.returncode == 0, proc.stderr
    h = H.load(str(hfile))
    assert max(len(s) - len(o) for s, o in zip(h.subclasses, h.overlap)) <= 4
    assert h.overlapping, "a 2-epoch flat network confuses enough for gamma 3 to share a class"
    proc = run_cli("hierarchy", "learn", flat, "-o", tmp_path / "t.json", "--split", "test")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    few = ["--base-epochs", "1", "--ft-epochs", "1", "--qat-epochs", "1"]
    proc = run_cli("train", run, *tiny, *few, "--hierarchy", hfile, "--val-fraction", "0.2", "--ft-outliers", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.json").read_text())["ft_outliers"] == 0.5
    proc = run_cli("export", run, "--out", tmp_path / "bundle")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    shared = [s for s in manifest["hierarchy"]["superclasses"] if s.get("overlap")]
    assert shared and all(set(s["overlap"]) <= set(s["subclasses"]) for s in shared)
    assert manifest["routing"]["chosen_on"].startswith("validation split")  # gated top-2, chosen at export
    assert "routing: topk gate {:g}, k 2".format(manifest["routing"]["gate"]) in proc.stdout
    proc = run_cli("evaluate", run, "--bundle", tmp_path / "bundle", "--out", tmp_path / "rep", "--adaptive")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    t = rep["routing_policies"]["topk"]
    assert t["extra_switches_per_image"] >= 0 and 0 <= t["recovered"] <= t["recoverable"] <= t["stage1_errors"]
    a = rep["adaptive"]
    assert a["candidates"] == ["base-ft", "flat-ft", "flat"] and list(a["choice"]) == h.superclasses
    for name, chosen in a["choice"].items():  # the best on validation, per cluster
        assert a["validation_accuracy"][name][chosen] == max(a["validation_accuracy"][name].values())
    assert "Adaptive network selection" in (tmp_path / "rep" / "report.md").read_text()
    assert "adaptive (Algorithm 2) {:.2%}".format(a["top1_accuracy"]) in proc.stdout
    for bad in ("bogus", ","):
        proc = run_cli("evaluate", run, "--adaptive", bad)
        assert proc.returncode != 0 and "--adaptive" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("classify", tmp_path / "bundle", *sample_pngs, "--policy", "topk", "--json")
    assert proc.returncode == 0, proc.stderr
    classes = [json.loads(line)["class"] for line in proc.stdout.splitlines()]
    assert len(classes) == len(sample_pngs) and set(classes) <= {c for s in h.subclasses for c in s}
    # no validation split: one clear line
    noval = tmp_path / "noval"
    noval.mkdir()
    cfg = json.loads((run / "config.json").read_text())
    (noval / "config.json").write_text(json.dumps(dict(cfg, val_fraction=0.0)))
    (noval / "flat.pt").write_bytes((run / "flat.pt").read_bytes())
    for args in (("hierarchy", "learn", noval, "-o", tmp_path / "x.json"), ("evaluate", noval, "--adaptive", "flat")):
        proc = run_cli(*args)
        assert proc.returncode != 0 and "--val-fraction" in proc.stderr and "Traceback" not in proc.stderr
