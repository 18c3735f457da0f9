"""Adaptive network selection (Algorithm 2): per cluster, the configuration with the best validation accuracy."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgetool.runtime.errors import UsageError  # noqa: E402
from edgetool.toolchain.evaluate import adaptive as A  # noqa: E402
from edgetool.toolchain.train import fit as training  # noqa: E402


def test_restricted_flat_network_reads_the_cluster_logits_in_order(tiny_run):
    members = tiny_run.hier.members(tiny_run.train.classes)
    x = tiny_run.xte[:16]
    full = training.predict_logits(tiny_run.flat(), x)
    for k, m in enumerate(members):
        got = training.predict_logits(A.candidate(tiny_run, "flat", k), x, len(m))
        assert torch.equal(got, full[:, torch.from_numpy(m)])


def test_selection_needs_a_validation_split_and_known_configurations(tiny_run):
    with pytest.raises(UsageError, match="--val-fraction"):
        A.select(tiny_run)
    with pytest.raises(UsageError, match="unknown network configuration"):
        A.candidate(tiny_run, "resnet9000", 0)


def test_selection_picks_the_best_validation_accuracy_per_cluster(tmp_path):
    from edgetool.toolchain.train.run import Run, TrainConfig

    cfg = TrainConfig(
        epochs=1, base_epochs=1, ft_epochs=1, limit_train=700, limit_test=100, batch=64, seed=3, val_fraction=0.3
    )
    run = Run.open(str(tmp_path / "run"), cfg, progress=False)
    out = A.select(run)
    assert len(out["choice"]) == run.hier.n_super == len(out["nets"])
    yv = run.data.val.labels
    for k, (choice, scores) in enumerate(zip(out["choice"], out["validation_accuracy"])):
        assert set(scores) == set(A.CANDIDATES) and all(0 <= v <= 1 for v in scores.values())
        assert scores[choice] == max(scores.values())
        # the reported score is the chosen network's accuracy on the cluster's validation images
        idx = np.nonzero(run.data.local[k, yv] >= 0)[0]
        xv = training.to_tensor(run.data.val.subset(idx), run.mean, run.std)
        pred = training.predict_logits(out["nets"][k], xv, len(run.hier.subclasses[k])).argmax(1).numpy()
        assert float((pred == run.data.local[k, yv[idx]]).mean()) == pytest.approx(scores[choice])
    before = os.path.getmtime(run.file("adaptive", "0.pt"))
    A.select(run)  # checkpointed stages: nothing retrains
    assert os.path.getmtime(run.file("adaptive", "0.pt")) == before
