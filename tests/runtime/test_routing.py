"""Routing policies on a scripted backend: exact switch sequences and choices, no training and no bundle."""

import numpy as np
import pytest

from edgetool.runtime.backends.base import BASE
from edgetool.runtime.backends.fake import FakeBackend, ScriptedBundle
from edgetool.runtime.choices import POLICIES
from edgetool.runtime.classifier import SuperSubClassifier
from edgetool.runtime.errors import SwitchError, UsageError
from edgetool.runtime.prediction import Prediction

HIERARCHY = [("vehicle", ["car", "truck", "ship"]), ("animal", ["cat", "dog"]), ("plant", ["tree", "rose", "fern"])]


def image(sup, sub, super_margin=6.0, sub_margin=6.0, runner_up=None):
    """One 1x1x5 'image' that tells the scripted networks what to answer."""
    return np.array([sup, sub, super_margin, sub_margin, -1 if runner_up is None else runner_up], np.float32).reshape(
        1, 5, 1, 1
    )


def scripted(target, batch):
    """Base: a peak of super_margin on the image's superclass (and half of it on a runner-up).
    Subclass network k: a peak of sub_margin on the image's subclass when the image is k's, else flat."""
    out = np.zeros((len(batch), 3), np.float32)
    for i, x in enumerate(batch[:, :, 0, 0]):
        sup, sub, sm, bm, runner_up = int(x[0]), int(x[1]), x[2], x[3], int(x[4])
        if target == BASE:
            out[i, sup] = sm
            if runner_up >= 0:
                out[i, runner_up] = sm / 2
        elif target == sup:
            out[i, sub] = bm
    return out


def classifier(policy, broken=(), **kw):
    be = FakeBackend(ScriptedBundle(HIERARCHY, broken), scripted)
    return SuperSubClassifier(be, policy=policy, **kw), be


def batch_of(*images):
    return np.concatenate(images)


STREAM = batch_of(image(0, 1), image(1, 0), image(0, 2), image(2, 1), image(1, 1))
WANT = [("vehicle", "truck"), ("animal", "cat"), ("vehicle", "ship"), ("plant", "rose"), ("animal", "dog")]


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_finds_the_scripted_classes(policy):
    clf, _ = classifier(policy)
    preds = clf.classify(STREAM)
    assert [(p.superclass_name, p.label) for p in preds] == WANT
    for p in preds:
        assert 0.9 < p.p_super <= 1 and 0.9 < p.p_sub <= 1 and p.confidence == pytest.approx(p.p_super * p.p_sub)


def test_per_image_switches_base_then_subclass_for_every_image():
    clf, be = classifier("per-image")
    clf.classify(STREAM)
    assert be.switch_log == [0, BASE, 1, BASE, 0, BASE, 2, BASE, 1]  # a backend starts on the base


def test_batched_runs_the_base_once_and_switches_once_per_superclass():
    clf, be = classifier("batched")
    clf.classify(STREAM)
    assert be.switch_log == [0, 1, 2]
    assert be.timings.summary()["infer"]["count"] == 4  # one base pass, one pass per group


def test_sticky_keeps_the_subclass_network_while_it_is_confident():
    clf, be = classifier("sticky", gate=0.6, interval=3)
    frames = batch_of(*[image(1, 0)] * 7)
    preds = clf.classify(frames)
    assert [p.label for p in preds] == ["cat"] * 7
    # routed on frames 1, 4 and 7 (every `interval` frames); the subclass network serves between
    assert be.switch_log == [1, BASE, 1, BASE, 1]


def test_sticky_reroutes_when_the_confidence_drops():
    clf, be = classifier("sticky", gate=0.6, interval=100)
    clf.classify(batch_of(image(1, 0), image(1, 1)))
    assert be.switch_log == [1]
    preds = clf.classify(batch_of(image(2, 2)))  # a new object: animal network is unsure -> route again
    assert (preds[0].superclass_name, preds[0].label) == ("plant", "fern")
    assert be.switch_log == [1, BASE, 2]
    clf.reset()
    clf.classify(batch_of(image(2, 2)))
    assert be.switch_log[-2:] == [BASE, 2]


def test_topk_tries_the_runner_up_when_the_superclass_is_unsure():
    # the base prefers vehicle only slightly; the plant network is sure, the vehicle network is flat
    unsure = image(2, 0, super_margin=0.4, runner_up=0)
    scripted_base = scripted(BASE, unsure)[0]
    assert int(np.argmax(scripted_base)) == 2
    clf, be = classifier("topk", gate=0.9, k=2)
    pred = clf.classify(unsure)[0]
    assert (pred.superclass_name, pred.label) == ("plant", "tree")
    assert be.switch_log == [2, 0]  # both candidates tried
    clf, be = classifier("topk", gate=0.1, k=2)  # confident enough: no second try
    clf.classify(unsure)
    assert be.switch_log == [2]


def test_a_failed_switch_leaves_the_previous_network_serving():
    clf, be = classifier("per-image", broken={1})
    clf.classify(batch_of(image(0, 0)))
    assert be.current == 0
    with pytest.raises(SwitchError, match="switch to subclass 1 failed, still serving the base network"):
        clf.classify(batch_of(image(1, 0)))
    assert be.current == BASE and be.switch_log == [0, BASE]
    clf, be = classifier("sticky", broken={1}, gate=0.6)
    clf.classify(batch_of(image(0, 0), image(0, 0)))
    assert be.switch_log == [0] and be.current == 0
    with pytest.raises(SwitchError, match="still serving the base network"):
        clf.classify(batch_of(image(1, 0), image(1, 0)))  # the vehicle network is unsure: route, fail


def test_unknown_policy_and_bad_batch():
    with pytest.raises(UsageError, match="unknown policy"):
        classifier("random")
    clf, _ = classifier("batched")
    with pytest.raises(UsageError, match="expected a batch"):
        clf.classify(np.zeros((2, 5), np.float32))


class Outputs:
    """The networks' outputs as plain arrays, no backend: what a policy object is given, and a log
    of which networks it asked for."""

    def __init__(self, p_super, p_sub):
        self.p_super, self.p_sub, self.asked = np.asarray(p_super, np.float32), p_sub, []
        self.bundle = ScriptedBundle(HIERARCHY)

    def superclass_probs(self, batch):
        self.asked.append("base")
        return np.repeat(self.p_super[None], len(batch), 0)

    def subclass_probs(self, batch, k):
        self.asked.append(k)
        return np.repeat(np.asarray(self.p_sub[k], np.float32)[None], len(batch), 0)

    def prediction(self, k, p_super, p_sub):
        s = self.bundle.superclasses[k]
        j = int(np.argmax(p_sub))
        return Prediction(k, s.name, j, s.subclasses[j], p_super, p_sub[j])


def test_a_policy_is_one_object_over_the_networks_outputs():
    """Each policy takes the networks' outputs and returns the choice, with no classifier around it."""
    from edgetool.runtime import policies
    from edgetool.runtime.bundle import routing as R

    subs = {0: [0.2, 0.5, 0.3], 1: [0.05, 0.95], 2: [0.9, 0.05, 0.05]}
    x = np.zeros((1, 5, 1, 1), np.float32)
    unsure = Outputs([0.5, 0.45, 0.05], subs)  # superclass 0 by a little; its network is unsure
    (p,) = policies.PerImage()(unsure, x)
    assert (p.superclass_name, p.label, unsure.asked) == ("vehicle", "truck", ["base", 0])
    (p,) = policies.TopK(R.Routing(gate=0.6, k=2, beta=1.0))(unsure, x)  # 0.5 x 0.5 < 0.45 x 0.95
    assert (p.superclass_name, p.label, unsure.asked[2:]) == ("animal", "dog", ["base", 0, 1])
    sure = Outputs([0.9, 0.05, 0.05], subs)
    (p,) = policies.TopK(R.Routing(gate=0.6, k=2, beta=1.0))(sure, x)
    assert (p.label, sure.asked) == ("truck", ["base", 0])  # above the gate: one route
    sticky = policies.Sticky(gate=0.4, interval=3)
    labels = [sticky(sure, x)[0].label for _ in range(4)]
    assert labels == ["truck"] * 4 and sure.asked[2:] == ["base", 0, 0, 0, "base", 0]  # re-routed every 3 frames
