"""`--topk K` in classify and camera: the K most confident classes of the network that made each
prediction, the prediction first, with the confidences the prediction itself reports."""

import json

import numpy as np
import pytest

from conftest import one_error_line, run_cli

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def flat_bundle(tiny_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("flat") / "bundle")
    proc = run_cli("export", tiny_run.path, "--out", out, "--model", "flat")
    assert proc.returncode == 0, proc.stderr
    return out


def _records(proc):
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line, parse_constant=pytest.fail) for line in proc.stdout.splitlines()]


def test_a_prediction_lists_its_classes_prediction_first():
    from edgetool.runtime.prediction import Prediction

    scores = (["a", "b", "c", "d"], np.array([0.1, 0.5, 0.3, 0.1], np.float32), 0.5, 2)  # the policy chose "c"
    p = Prediction(0, "s", 2, "c", 0.5, 0.3, scores)
    assert [t["class"] for t in p.top(3)] == ["c", "b", "a"]  # not the argmax first: the prediction
    assert [t["confidence"] for t in p.top(9)] == pytest.approx([0.15, 0.25, 0.05, 0.05])
    assert p.top(1) == [{"class": "c", "confidence": p.confidence}] and p.top(0) == []
    assert Prediction(0, "s", None, None, 0.9, 1.0).top(3) == []  # superclass only: no class to rank


def test_classify_json_ranks_the_routed_networks_classes(tiny_bundle, sample_pngs):
    from edgetool.runtime.bundle.reader import Bundle

    with Bundle.open(tiny_bundle) as b:
        classes_of = {s.name: list(s.subclasses) for s in b.superclasses}
    plain = _records(run_cli("classify", tiny_bundle, *sample_pngs, "--json", "--policy", "per-image"))
    assert all("topk" not in r for r in plain)  # off unless asked
    ranked = _records(run_cli("classify", tiny_bundle, *sample_pngs, "--json", "--policy", "per-image", "--topk", "20"))
    for r, ref in zip(ranked, plain):
        top = r.pop("topk")
        assert r == ref  # the rest of the record is unchanged
        assert top[0] == {"class": r["class"], "confidence": r["confidence"]}
        assert [t["class"] for t in top] == [t["class"] for t in sorted(top, key=lambda t: -t["confidence"])]
        assert sorted(t["class"] for t in top) == sorted(classes_of[r["superclass"]])  # the network that ran
        assert sum(t["confidence"] for t in top) == pytest.approx(r["p_super"], abs=1e-5)  # p_super x sum(p_sub)
    for r in _records(run_cli("classify", tiny_bundle, *sample_pngs, "--json", "--topk", "2")):
        assert len(r["topk"]) == 2 and r["topk"][0]["class"] == r["class"]


def test_classify_flat_bundle_ranks_all_classes_in_json_and_text(flat_bundle, sample_pngs):
    for r in _records(run_cli("classify", flat_bundle, *sample_pngs, "--json", "--topk", "10")):
        top = r["topk"]
        assert len({t["class"] for t in top}) == 10 and top[0]["class"] == r["class"]
        assert top[0]["confidence"] == pytest.approx(r["confidence"], rel=1e-6)
        assert sum(t["confidence"] for t in top) == pytest.approx(1.0, abs=1e-5)
    ranked = _records(run_cli("classify", flat_bundle, *sample_pngs, "--json", "--topk", "3"))
    proc = run_cli("classify", flat_bundle, *sample_pngs, "--topk", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[-2:] == ["top", "3"]
    for line, r in zip(lines[1:], ranked):
        shown = ", ".join("{} ({:.3f})".format(t["class"], t["confidence"]) for t in r["topk"])
        assert line.endswith("  " + shown) and r["image"] in line


def test_camera_records_carry_the_same_top_classes(tiny_bundle, sample_pngs, tmp_path):
    pytest.importorskip("cv2")
    import os
    import shutil

    folder = tmp_path / "frames"
    folder.mkdir()
    for p in sample_pngs:
        shutil.copy(p, str(folder / os.path.basename(p)))
    want = {r["image"]: r["topk"] for r in _records(run_cli("classify", tiny_bundle, folder, "--json", "--topk", "2"))}
    proc = run_cli("camera", tiny_bundle, folder, "--headless", "--json", "--policy", "per-image", "--topk", "2")
    frames = [r for r in _records(proc) if r["type"] == "frame"]
    assert len(frames) == len(want)
    for r in frames:
        got, ref = r["topk"], want[r["image"]]
        assert [t["class"] for t in got] == [t["class"] for t in ref]
        assert [t["confidence"] for t in got] == pytest.approx([t["confidence"] for t in ref], abs=1e-5)


def test_a_negative_topk_is_one_error_line(tiny_bundle, sample_pngs):
    for cmd in (["classify", tiny_bundle, sample_pngs[0]], ["camera", tiny_bundle, sample_pngs[0], "--headless"]):
        assert "--topk must be >= 0" in one_error_line(run_cli(*cmd, "--topk", "-1"))
