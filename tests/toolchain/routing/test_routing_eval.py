"""Top-1 against gated top-k routing, replayed on constructed probabilities (exact counts)."""

import numpy as np
import pytest

pytest.importorskip("torch")

from edgetool.toolchain.routing import search as R  # noqa: E402

# classes 0..4; cluster 0 = {0, 1, 2(shared)}, cluster 1 = {2, 3, 4}
MEMBERS = [np.array([0, 1, 2]), np.array([2, 3, 4])]
LOCAL = np.array([[0, 1, 2, -1, -1], [-1, -1, 0, 1, 2]])


def case():
    # image: true class, P(super), winning subclass output in each cluster and its probability
    p = np.array([[0.9, 0.1], [0.55, 0.45], [0.6, 0.4], [0.3, 0.7], [0.52, 0.48]])
    q0 = np.array([[0.8, 0.1, 0.1], [0.5, 0.3, 0.2], [0.4, 0.3, 0.3], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])
    q1 = np.array([[0.4, 0.3, 0.3], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 4, 1, 3, 4])
    return p, [q0, q1], y


def test_top1_routes_by_the_superclass_only():
    p, qs, y = case()
    pred, passes = R.route(p, qs, MEMBERS, 1.0, 1)
    assert pred.tolist() == [0, 0, 0, 3, 2] and passes.tolist() == [1] * 5


def test_gated_top2_follows_equation_2_under_the_gate():
    p, qs, y = case()
    pred, passes = R.route(p, qs, MEMBERS, 0.58, 2)
    # image 0: sure (0.9); 1: 0.55*0.5 < 0.45*0.8 -> class 4; 2: sure at 0.6; 3: sure (0.7);
    # 4: 0.52*0.6 < 0.48*0.8 -> cluster 1's class 4
    assert pred.tolist() == [0, 4, 0, 3, 4] and passes.tolist() == [1, 2, 1, 1, 2]
    r = R.policy(p, qs, MEMBERS, LOCAL, y, 0.58, 2)
    assert r["stage1_errors"] == 2  # images 1 and 4: cluster 0 cannot output class 4
    assert r["recovered"] == 2 and r["recovered_fraction"] == 1.0 and r["lost"] == 0
    assert r["recoverable"] == 2  # both second routes output class 4
    # at gate 0.54 only image 4 gets a second route; image 1 (0.55) stays a stage-1 error
    assert R.policy(p, qs, MEMBERS, LOCAL, y, 0.54, 2)["recoverable"] == 1
    assert R.recoverable(p, qs, MEMBERS, y, 0.58, 2).tolist() == [False, True, False, False, True]
    assert r["extra_switches_per_image"] == pytest.approx(0.4)
    assert r["top1_accuracy"] == pytest.approx(2 / 5) and r["accuracy"] == pytest.approx(4 / 5)


def test_gate_is_chosen_under_the_switch_budget():
    p, qs, y = case()
    # 0.2 extra switches / image allows one of the five images a second route: only gates <= 0.52
    g = R.choose_gate(p, qs, MEMBERS, LOCAL, y, 2, max_extra=0.2)
    assert R.policy(p, qs, MEMBERS, LOCAL, y, g, 2)["extra_switches_per_image"] <= 0.2
    assert g in R.GATES and g <= 0.52
    assert R.choose_gate(p, qs, MEMBERS, LOCAL, y, 2, max_extra=1.0) > 0.55
    no_err = R.policy(p[:1], [q[:1] for q in qs], MEMBERS, LOCAL, y[:1], 0.5, 2)
    assert no_err["recovered_fraction"] is None and no_err["recovered_fraction_reason"]


def test_beta_weights_the_superclass_probability():
    p, qs, y = case()
    # every image unsure: image 3 goes to cluster 1 by 0.7*0.7 > 0.3*0.8, but by p_sub alone to cluster 0 (0.8)
    eq2, _ = R.route(p, qs, MEMBERS, 1.0, 2)
    alone, _ = R.route(p, qs, MEMBERS, 1.0, 2, beta=0.0)
    assert eq2[3] == 3 and alone[3] == 2
    assert R.route(p, qs, MEMBERS, 1.0, 2, beta=1.0)[0].tolist() == eq2.tolist()
    r = R.policy(p, qs, MEMBERS, LOCAL, y, 1.0, 2, beta=0.0)
    assert r["beta"] == 0.0 and r["lost"] == 1  # image 3 was right under top-1


def test_gate_and_beta_are_chosen_together():
    # image A (class 4): the superclass network prefers cluster 0 (0.7), whose network is unsure (0.5);
    # cluster 1's network is sure of class 4 (0.9). Image B (class 0) is right on either rule.
    p = np.array([[0.7, 0.3], [0.7, 0.3]])
    q0 = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    q1 = np.array([[0.05, 0.05, 0.9], [0.1, 0.1, 0.8]])
    y = np.array([4, 0])
    # equation 2: 0.7 * 0.5 > 0.3 * 0.9, so no gate helps; beta 0.75 is not enough, 0.5 is
    assert R.choose(p, [q0, q1], MEMBERS, LOCAL, y, 2, max_extra=1.0) == (0.8, 0.5)
    assert R.choose_gate(p, [q0, q1], MEMBERS, LOCAL, y, 2, max_extra=1.0) == 0.0  # beta 1: ties -> lowest gate
    # under 0.2 extra switches per image no second route is allowed: equation 2 and gate 0 win the tie
    assert R.choose(p, [q0, q1], MEMBERS, LOCAL, y, 2, max_extra=0.2) == (0.0, 1.0)
