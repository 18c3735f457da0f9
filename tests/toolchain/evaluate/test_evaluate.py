import json
import os

import numpy as np
import pytest

from edgetool.toolchain.evaluate import metrics as R


def test_confusion_matrix_by_hand():
    true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 1, 0, 1, 1, 2, 0, 2, 2]
    m = R.confusion_matrix(true, pred, 3)
    assert m.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 3]]
    pct = R.row_percent(m)
    np.testing.assert_allclose(pct[0], [200 / 3, 100 / 3, 0])
    np.testing.assert_allclose(pct[2], [25, 0, 75])
    acc = R.per_group_accuracy([1, 0, 1, 1, 1, 1, 0, 1, 1], true, 3)
    np.testing.assert_allclose(acc, [2 / 3, 1.0, 0.75])
    assert R.gap_closed(0.80, 0.70, 0.90)["value"] == pytest.approx(0.5)
    assert R.gap_closed(0.8, 0.7, 0.7)["value"] is None
    assert R.signed_int8(np.array([255, 1, 128], np.uint8)).tolist() == [-1, 1, -128]


def test_evaluate_report_numbers_and_plots(run_cli, tiny_run, tiny_bundle, tmp_path):
    pytest.importorskip("torch")
    from edgetool.toolchain.train import fit as T

    out = tmp_path / "report"
    proc = run_cli("evaluate", tiny_run.path, "--bundle", tiny_bundle, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "gap closed" in proc.stdout
    text = (out / "report.json").read_text()
    rep = json.loads(text, parse_constant=lambda c: pytest.fail("non-strict JSON constant " + c))
    # confusion matrix recomputed by hand from the superclass network's predictions
    y = tiny_run.yte.numpy()
    true_k = tiny_run.sup_of[y]
    pred_k = T.predict_logits(tiny_run.superclass(), tiny_run.xte, tiny_run.hier.n_super).argmax(1).numpy()
    n = tiny_run.hier.n_super
    hand = [[0] * n for _ in range(n)]
    for t, p in zip(true_k, pred_k):
        hand[t][p] += 1
    assert rep["confusion_counts"] == hand
    assert rep["dataset"] == os.path.basename(os.path.normpath(tiny_run.cfg.data))  # no machine paths in reports
    for i in range(n):
        row = sum(hand[i])
        assert rep["confusion_percent"][i] == pytest.approx([round(100 * c / row, 2) for c in hand[i]])
    assert rep["superclass_accuracy"] == pytest.approx(np.trace(np.array(hand)) / len(y))
    assert rep["routing"]["base_fp32"] == rep["superclass_accuracy"]
    a = rep["accuracy"]
    g = rep["gap_closed"]["vanilla"]
    if a["upper"] > a["lower"]:
        assert g["value"] == pytest.approx((a["vanilla"] - a["lower"]) / (a["upper"] - a["lower"]))
    else:
        assert g["value"] is None and g["reason"]
    _assert_flat_numbers(rep, tiny_run, y, true_k)
    # x: stored delta bytes / stored bytes of base.onnx, from the bundle's manifest
    man = json.load(open(os.path.join(tiny_bundle, "manifest.json")))
    for d in man["deltas"]:
        assert rep["x"]["per_superclass"][d["superclass"]] == pytest.approx(d["stored_size"] / man["base"]["size"])
    for name in rep["superclasses"]:
        assert sum(rep["deltas"][name]["histogram"]) == sum(v.size for v in tiny_run.super_qat().int8_codes().values())
        c = rep["compression"][name]
        assert 0 < c["bundle_x"] < 1.5 and 0 < c["fp16_7z_no_qat"] < 1.5
    _assert_report_files(out)


def _assert_flat_numbers(rep, tiny_run, y, true_k):
    """The control and the per-superclass lower bound, by hand from the flat network."""
    from edgetool.toolchain.train import fit as T

    # the control: flat logits restricted to the true superclass's classes
    flat_logits = T.predict_logits(tiny_run.flat(), tiny_run.xte).numpy()
    ctrl = [
        int(np.argmax(np.where(tiny_run.sup_of == true_k[i], flat_logits[i], -np.inf))) == y[i] for i in range(len(y))
    ]
    assert rep["accuracy"]["control"] == pytest.approx(np.mean(ctrl))
    # per-superclass lower bound
    flat = T.predict_logits(tiny_run.flat(), tiny_run.xte).argmax(1).numpy()
    for k in range(tiny_run.hier.n_super):
        sel = true_k == k
        assert rep["per_superclass_accuracy"]["lower"][k] == pytest.approx((flat[sel] == y[sel]).mean())


def _assert_report_files(out):
    for f in (
        "report.md",
        "report.html",
        "confusion.png",
        "per_superclass.png",
        "delta_histograms.png",
        "compression.png",
    ):
        assert (out / f).stat().st_size > 0
        if f.endswith(".png"):
            assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "gap closed" in html.lower() and "confusion.png" in html


def test_evaluate_bad_run(run_cli, tmp_path):
    proc = run_cli("evaluate", tmp_path / "nothing")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "not a training run" in proc.stderr
