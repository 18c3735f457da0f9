"""A learned hierarchy with overlapping clusters through the normal CLI: train, export, evaluate, classify."""

import json

import pytest

pytest.importorskip("scipy")

from edgetool.toolchain import hierarchy as H  # noqa: E402


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
    proc = run_cli("train", run, *tiny, *few, "--hierarchy", hfile)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("export", run, "--out", tmp_path / "bundle")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    shared = [s for s in manifest["hierarchy"]["superclasses"] if s.get("overlap")]
    assert shared and all(set(s["overlap"]) <= set(s["subclasses"]) for s in shared)
    proc = run_cli("evaluate", run, "--bundle", tmp_path / "bundle", "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["routing_policies"]["topk"]["extra_switches_per_image"] >= 0
    proc = run_cli("classify", tmp_path / "bundle", *sample_pngs, "--policy", "topk", "--json")
    assert proc.returncode == 0, proc.stderr
    labels = [json.loads(line)["label"] for line in proc.stdout.splitlines()]
    assert len(labels) == len(sample_pngs) and set(labels) <= {c for s in h.subclasses for c in s}
    # no validation split: one clear line
    proc = run_cli("hierarchy", "learn", run, "-o", tmp_path / "x.json")
    assert proc.returncode != 0 and "--val-fraction" in proc.stderr and "Traceback" not in proc.stderr
