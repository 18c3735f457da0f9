"""Gated top-k settings: the routing weight beta, the bundle's stored routing, overrides and bad values."""

import numpy as np
import pytest

from edgetool.runtime.bundle import routing as R
from edgetool.runtime.backends.base import BASE
from edgetool.runtime.backends.fake import FakeBackend, ScriptedBundle
from edgetool.runtime.classifier import SuperSubClassifier, masked_softmax
from edgetool.runtime.errors import UsageError
from edgetool.runtime.bundle.names import FieldError

HIERARCHY = [("vehicle", ["car", "truck", "ship"]), ("animal", ["cat", "dog"]), ("plant", ["tree", "rose", "fern"])]
# The base prefers vehicle (p 0.67) over plant (0.24); the vehicle network is unsure (top 0.51),
# the plant network sure (0.99). Equation 2 keeps vehicle (0.34 > 0.24); beta 0.25 takes plant.
LOGITS = {BASE: [2.0, 0.0, 1.0], 0: [1.0, 0.5, 0.0], 1: [0.0, 0.0, 0.0], 2: [5.0, 0.0, 0.0]}


def classify(routing=None, policy="topk", logits=LOGITS, **kw):
    """The classifier on one image, every network answering *logits*[target] whatever the image."""

    def fixed(target, batch):
        return np.tile(np.array(logits[target], np.float32), (len(batch), 1))

    be = FakeBackend(ScriptedBundle(HIERARCHY, routing=routing), fixed)
    clf = SuperSubClassifier(be, policy=policy, **kw)
    return clf, clf.classify(np.zeros((1, 1, 1, 1), np.float32))[0], be


def test_beta_decides_between_the_two_routes():
    _, pred, be = classify(gate=0.9, k=2)
    assert pred.label == "car" and be.switch_log == [0, 2]  # equation 2: both tried, vehicle wins
    _, pred, _ = classify(gate=0.9, k=2, beta=0.25)
    assert (pred.superclass_name, pred.label) == ("plant", "tree")
    assert pred.confidence == pytest.approx(pred.p_super * pred.p_sub)  # what is reported stays p_super x p_sub
    _, pred, be = classify(gate=0.5, k=2, beta=0.25)  # sure enough of vehicle: one route
    assert pred.label == "car" and be.switch_log == [0]


def test_the_bundles_routing_applies_to_topk_unless_overridden():
    stored = R.Routing(gate=0.9, k=2, beta=0.25, chosen_on="validation split (100 images)")
    clf, pred, _ = classify(stored)
    assert pred.label == "tree" and clf.routing == stored
    clf, pred, _ = classify(stored, beta=1.0)
    assert pred.label == "car" and (clf.gate, clf.k, clf.beta) == (0.9, 2, 1.0)
    assert clf.routing.chosen_on == "validation split (100 images); set by the caller: beta"
    clf, pred, be = classify(stored, gate=0.5)
    assert pred.label == "car" and be.switch_log == [0] and clf.beta == 0.25
    clf, _, _ = classify(None)
    assert clf.routing == R.DEFAULT and (clf.gate, clf.k, clf.beta) == (0.6, 2, 1.0)
    clf, _, _ = classify(stored, policy="sticky")  # the stream policy keeps its own threshold
    assert clf.gate == R.GATE and clf.routing.chosen_on == "default"


def test_the_runtime_and_the_toolchain_replay_agree():
    """routing_eval.route (what evaluate and export choose with) predicts what the classifier does."""
    pytest.importorskip("torch")
    from edgetool.toolchain.routing.search import route

    rng = np.random.default_rng(3)
    members = [np.array([0, 1, 2]), np.array([3, 4]), np.array([5, 6, 7])]
    for gate, beta in ((0.95, 1.0), (0.95, 0.2), (0.7, 0.0), (0.0, 0.5)):
        for _ in range(40):
            logits = {t: list(rng.normal(0, 1.5, 3)) for t in LOGITS}
            clf, pred, _ = classify(gate=gate, k=2, beta=beta, logits=logits)
            p = masked_softmax(np.array([logits[BASE]]), 3).astype(np.float64)
            qs = [masked_softmax(np.array([logits[k]]), len(m)).astype(np.float64) for k, m in enumerate(members)]
            want, _ = route(p, qs, members, gate, 2, beta)
            got = members[pred.superclass][pred.subclass]
            assert got == want[0], (gate, beta, logits)


def test_manifest_routing_is_checked_field_by_field():
    assert R.parse(None, 3) is None
    r = R.parse({"gate": 0.8, "k": 2, "beta": 0.25, "chosen_on": "validation split"}, 3)
    assert r == R.Routing(0.8, 2, 0.25, "validation split")
    assert R.parse({"gate": 1, "k": 3}, 3) == R.Routing(1.0, 3, 1.0, "not stated")
    for bad, field in (
        ([0.8], "routing"),
        ({"k": 2}, "routing.gate"),
        ({"gate": float("nan"), "k": 2}, "routing.gate"),
        ({"gate": True, "k": 2}, "routing.gate"),
        ({"gate": 0.8, "k": 4}, "routing.k"),
        ({"gate": 0.8, "k": 2.0}, "routing.k"),
        ({"gate": 0.8, "k": 2, "beta": 17}, "routing.beta"),
        ({"gate": 0.8, "k": 2, "chosen_on": ""}, "routing.chosen_on"),
    ):
        with pytest.raises(FieldError, match=field.replace(".", r"\.")):
            R.parse(bad, 3)


@pytest.mark.parametrize(
    "gate,k,beta,needle",
    [(1.5, None, None, "--gate"), (-0.1, None, None, "--gate"), (None, 0, None, "--k"), (None, None, -1, "--beta")],
)
def test_out_of_range_options_are_one_usage_error(gate, k, beta, needle):
    with pytest.raises(UsageError, match=needle):
        R.check_options(gate, k, beta)
    R.check_options(None, None, None)
    R.check_options(0.0, 1, 0.0)
    R.check_options(1.0, 5, R.MAX_BETA)
