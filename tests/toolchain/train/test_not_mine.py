"""Subclass networks with a "not mine" head row (--ft-outliers R --ft-not-mine): the labels, the
head width, the bundle that records the row, and the runtime's p_sub that the row lowers."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgetool.runtime.backends.base import BASE  # noqa: E402
from edgetool.runtime.backends.fake import FakeBackend, ScriptedBundle  # noqa: E402
from edgetool.runtime.classifier import SuperSubClassifier  # noqa: E402
from edgetool.runtime.errors import UsageError  # noqa: E402
from edgetool.toolchain.train import fit as T  # noqa: E402
from edgetool.toolchain.train.run import Run, TrainConfig  # noqa: E402


def test_outlier_labels_become_the_row_after_the_classes():
    y = torch.tensor([0, T.OUTLIER, 2, T.OUTLIER])
    assert T.not_mine_labels(y, 3).tolist() == [0, 3, 2, 3]


def test_not_mine_without_outlier_images_is_refused(run_cli, tmp_path):
    with pytest.raises(UsageError, match="ft_not_mine needs ft_outliers"):
        TrainConfig(ft_not_mine=True).check()
    proc = run_cli("train", tmp_path / "run", "--ft-not-mine")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    want = "error: config: ft_not_mine needs ft_outliers > 0 (the images it learns from)"
    assert proc.stderr.strip().splitlines() == [want]
    assert not (tmp_path / "run").exists()


def test_the_runtime_takes_the_row_into_p_sub_and_never_answers_it():
    """Subclass network a puts most of its mass on the "not mine" row: its p_sub falls, its
    answer stays one of its classes, and gated top-2 takes the other route."""
    hierarchy = [("a", ["a0", "a1"]), ("b", ["b0", "b1"])]
    rows = {BASE: [0.2, 0.0], 0: [1.0, 0.0, 4.0], 1: [0.0, 1.5, 0.0]}  # a unsure; a0, but "not mine"; b1

    def clf(not_mine):
        bundle = ScriptedBundle(hierarchy, not_mine=not_mine)

        def logits(target, batch):
            out = np.zeros((len(batch), bundle.head_width), np.float32)
            r = rows[target][: bundle.head_width]
            out[:, : len(r)] = r
            return out

        return SuperSubClassifier(FakeBackend(bundle, logits), "topk", gate=0.9, beta=1.0)

    batch = np.zeros((1, 1, 1, 1), np.float32)
    without, with_row = clf(False), clf(True)
    assert (without.bundle.head_width, with_row.bundle.head_width) == (2, 3)
    q = with_row.subclass_probs(batch, 0)[0]
    e = np.exp([1.0, 0.0, 4.0])
    np.testing.assert_allclose(q, e[:2] / e.sum(), rtol=1e-6)
    assert without.classify(batch)[0].label == "a0"  # 0.55 x 0.73 on a, against 0.45 x 0.82 on b
    assert with_row.classify(batch)[0].label == "b1"  # 0.55 x 0.05 on a, against 0.45 x 0.69 on b


@pytest.fixture(scope="module")
def nm_run(tmp_path_factory):
    cfg = TrainConfig(
        limit_train=400, limit_test=60, epochs=1, base_epochs=1, ft_epochs=1, qat_epochs=1, batch=64,
        ft_outliers=0.5, ft_not_mine=True, val_fraction=0.25,
    )  # fmt: skip
    return Run.open(str(tmp_path_factory.mktemp("nm")), cfg, progress=False)


def test_fine_tune_labels_the_outliers_not_mine_and_the_head_holds_the_row(nm_run):
    run = nm_run
    assert run.hier.head_width == max([run.hier.n_super] + [len(s) + 1 for s in run.hier.subclasses])
    for k in range(run.hier.n_super):
        x, y = run.fine_tune_data(k)
        n, n_own = len(run.hier.subclasses[k]), int(run.sub_mask(k).sum())
        assert int((y == T.OUTLIER).sum()) == 0 and int((y == n).sum()) == round(0.5 * n_own)
        assert int((y < n).sum()) == n_own and run.hier.outputs(k) == n + 1


def test_a_not_mine_bundle_records_the_row_and_classifies(nm_run, tmp_path, run_cli, sample_pngs):
    from edgetool.runtime.backends import load_backend
    from edgetool.runtime.bundle.reader import Bundle

    out = tmp_path / "bundle"
    m = nm_run.export(str(out))
    assert m["not_mine"] is True and m["head_width"] == nm_run.hier.head_width
    assert m["routing"]["chosen_on"].startswith("validation split")
    proc = run_cli("inspect", out)
    assert proc.returncode == 0, proc.stderr
    assert 'head width  {} (a "not mine" row'.format(m["head_width"]) in proc.stdout
    with Bundle.open(str(out)) as b:
        assert b.not_mine
        be = load_backend("onnxruntime", b)
        clf = SuperSubClassifier(be, "topk")
        x = nm_run.samples(4)
        for k, s in enumerate(b.superclasses):
            be.switch(k)
            z = be.infer(x).astype(np.float64)[:, : len(s.subclasses) + 1]
            want = np.exp(z - z.max(1, keepdims=True))
            want = (want / want.sum(1, keepdims=True))[:, : len(s.subclasses)]
            got = clf.subclass_probs(x, k)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            assert (got.sum(1) < 1.0).all()  # the row took some mass
    proc = run_cli("doctor", out, "--json")  # the weight forms reproduce every row, "not mine" included
    assert proc.returncode == 0, proc.stdout + proc.stderr
    statuses = {c["check"]: c["status"] for c in json.loads(proc.stdout)}
    assert statuses["onnxruntime"] == "PASS" and statuses["weight form int8"] == "PASS"
    proc = run_cli("classify", out, *sample_pngs, "--policy", "topk", "--json")
    assert proc.returncode == 0, proc.stderr
    classes = {c for s in nm_run.hier.subclasses for c in s}
    assert {json.loads(line)["class"] for line in proc.stdout.splitlines()} <= classes


@pytest.mark.parametrize(
    "change, message",
    [
        ({"not_mine": "yes"}, "not_mine: 'yes' is not true or false"),
        ({"not_mine": True, "head_width": 4}, "head_width: 4 is less than the 5 rows it must hold"),
    ],
)
def test_a_manifest_with_a_bad_not_mine_is_refused(tiny_bundle, change, message):
    from edgetool.runtime.bundle import manifest as M
    from edgetool.runtime.bundle.names import FieldError

    d = json.loads(open(tiny_bundle + "/manifest.json").read())
    assert d["head_width"] == 4 and "not_mine" not in d  # the sample: tops has 4 classes
    d.update(change)
    with pytest.raises(FieldError, match=message):
        M.parse(d)


def test_the_row_cannot_be_switched_on_a_trained_run(run_cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(ft_outliers=0.5).save(str(run / "config.json"))
    (run / "super.pt").write_bytes(b"trained before")
    proc = run_cli("train", run, "--ft-not-mine")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'trained without a "not mine" row; --ft-not-mine cannot change' in lines[0]
    assert not json.loads((run / "config.json").read_text())["ft_not_mine"]  # nothing written
    (run / "super.pt").unlink()  # nothing trained yet: the flag may still change
    with pytest.raises(UsageError) as refused:  # refused later, for the missing data, not for the row
        Run.open(str(run), TrainConfig(ft_outliers=0.5, ft_not_mine=True, data=str(tmp_path / "none")))
    assert "not mine" not in str(refused.value) and "none" in str(refused.value)
