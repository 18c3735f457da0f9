"""The learned router a bundle may carry (manifest ``routing.learned``): its checks and its rule."""

import json

import numpy as np
import pytest

from edgetool.runtime.bundle import learned_routing as L
from edgetool.runtime.bundle import routing as R
from edgetool.runtime.backends.fake import FakeBackend, ScriptedBundle
from edgetool.runtime.classifier import SuperSubClassifier
from edgetool.runtime.bundle.names import FieldError

HIER = [("a", ["a0", "a1"]), ("b", ["b0", "b1", "b2"]), ("c", ["c0"])]
SIZES = [2, 3, 1]


def model(rng, n_in, n_out, hidden=0):
    dims = [n_in] + ([hidden] if hidden else []) + [n_out]
    layers = tuple((rng.normal(size=(o, i)), rng.normal(size=o)) for i, o in zip(dims, dims[1:]))
    return L.Model(rng.normal(size=n_in), rng.uniform(0.5, 2, size=n_in), layers)


def router(seed=0, threshold=0.0, pairs=((0, 1), (0, 2))):
    rng = np.random.default_rng(seed)
    combiners = {(a, b): model(rng, 3 + SIZES[a] + SIZES[b] + 2, SIZES[a] + SIZES[b], 4 * (b == 2)) for a, b in pairs}
    return L.Learned(model(rng, L.GATE_FEATURES, 1), threshold, combiners)


def routing_dict(learned):
    return {"gate": 0.6, "k": 2, "beta": 0.5, "chosen_on": "test", "learned": learned.to_dict()}


def test_a_learned_router_survives_the_manifest_round_trip():
    learned = router()
    r = R.parse(json.loads(json.dumps(routing_dict(learned))), 3, SIZES)
    assert r.learned is not None and sorted(r.learned.pairs) == [(0, 1), (0, 2)]
    for (a, b), m in learned.pairs.items():
        x = np.random.default_rng(2).normal(size=(5, 3 + SIZES[a] + SIZES[b] + 2))
        np.testing.assert_allclose(r.learned.pairs[(a, b)](x), m(x))
    f = np.random.default_rng(3).normal(size=(4, L.GATE_FEATURES))
    np.testing.assert_allclose(r.learned.gate(f), learned.gate(f))
    assert r.to_dict()["learned"] == learned.to_dict()
    assert R.parse({"gate": 0.6, "k": 2, "learned": None}, 3, SIZES).learned is None
    assert "1 pair combiner" in R.Routing(learned=L.Learned(None, -0.5, {(0, 2): learned.pairs[(0, 2)]})).describe()


def _broken(change):
    d = routing_dict(router())
    change(d)
    return d


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.update(k=3), "routing.learned"),
        (lambda d: d["learned"].update(threshold=float("nan")), "routing.learned.threshold"),
        (lambda d: d["learned"]["gate"]["mean"].pop(), "routing.learned.gate.mean"),
        (lambda d: d["learned"]["gate"]["std"].__setitem__(0, 0.0), "routing.learned.gate.std"),
        (lambda d: d["learned"]["gate"].update(layers=[]), "routing.learned.gate.layers"),
        (lambda d: d["learned"]["pairs"][0].update(a=1, b=1), "routing.learned.pairs[0].b"),
        (lambda d: d["learned"]["pairs"][0].update(b=7), "routing.learned.pairs[0].b"),
        (lambda d: d["learned"]["pairs"].append(dict(d["learned"]["pairs"][0])), "routing.learned.pairs[2]"),
        (lambda d: d["learned"]["pairs"][0]["model"]["layers"][0]["weight"].pop(), "layers[0].weight"),
        (lambda d: d["learned"]["pairs"][0]["model"]["layers"][0]["weight"][0].append(1.0), "weight[0]"),
        (lambda d: d["learned"]["pairs"][1]["model"]["layers"][0]["bias"].__setitem__(0, "x"), "bias[0]"),
        (lambda d: d["learned"]["pairs"][1]["model"]["layers"][0].update(weight=[[0.0] * 10] * 65), "hidden"),
        (lambda d: d["learned"].update(pairs={}), "routing.learned.pairs"),
        (lambda d: d["learned"].update(features=-1), "routing.learned.features"),
        (lambda d: d["learned"].update(features=2.5), "routing.learned.features"),
        (lambda d: d["learned"].update(features=4), "must have 18"),  # its combiners take 10 inputs
    ],
)
def test_a_broken_learned_router_names_its_field(change, field):
    with pytest.raises(FieldError) as e:
        R.parse(_broken(change), 3, SIZES)
    assert field in str(e.value) and "\n" not in str(e.value)


def scripted(learned, beta=1.0, not_mine=False, seed=0):
    """A scripted backend whose networks give fixed random logits per image (its index in pixel 0)."""
    bundle = ScriptedBundle(HIER, routing=R.Routing(0.6, 2, beta, "test", learned), not_mine=not_mine)
    rng = np.random.default_rng(seed)
    table = {t: rng.normal(scale=3, size=(64, bundle.head_width)) for t in (-1, 0, 1, 2)}

    def logits(target, batch):
        return table[target][batch[:, 0, 0, 0].astype(int)]

    return FakeBackend(bundle, logits), table


def images(n=64):
    x = np.zeros((n, 1, 2, 2), dtype=np.float32)
    x[:, 0, 0, 0] = np.arange(n)
    return x


def test_the_gate_decides_the_extra_switch():
    never, always = router(threshold=1e9), router(threshold=-1e9)
    be, _ = scripted(never)
    plain = SuperSubClassifier(be, policy="per-image").classify(images())
    clf = SuperSubClassifier(be, policy="topk")
    assert [p.label for p in clf.classify(images())] == [p.label for p in plain]
    assert clf.extra_passes_per_image == 0.0
    clf = SuperSubClassifier(scripted(always)[0], policy="topk")
    clf.classify(images())
    assert clf.extra_passes_per_image == 1.0


def test_the_pair_combiner_answers_and_a_pair_without_one_keeps_equation_2():
    learned = router(threshold=-1e9, pairs=((0, 1),))
    be, table = scripted(learned, beta=0.5)
    preds = SuperSubClassifier(be, policy="topk").classify(images())
    for i, p in enumerate(preds):
        lp = L.log_softmax(table[-1][i], 3)
        r1, r2 = np.argsort(-lp, kind="stable")[:2]
        lq = {r: L.with_not_mine(L.log_softmax(table[r][i], SIZES[r]), SIZES[r]) for r in (r1, r2)}
        a, b = sorted((int(r1), int(r2)))
        if (a, b) == (0, 1):
            j = int(np.argmax(learned.pairs[(0, 1)](np.concatenate([lp, lq[0], lq[1]]))))
            want = (0, j) if j < 2 else (1, j - 2)
        else:
            s = {r: 0.5 * lp[r] + lq[r][: SIZES[r]].max() for r in (r1, r2)}
            r = r2 if s[r2] > s[r1] else r1
            want = (int(r), int(np.argmax(lq[r][: SIZES[r]])))
        assert (p.superclass, p.subclass) == want
        assert p.p_super == pytest.approx(np.exp(lp[p.superclass]))
        assert p.p_sub == pytest.approx(np.exp(lq[p.superclass][p.subclass]))


def test_the_options_set_the_learned_router_aside():
    be, _ = scripted(router(threshold=-1e9))
    clf = SuperSubClassifier(be, policy="topk", gate=0.0)
    clf.classify(images())
    assert clf.routing.learned is None and clf.extra_passes_per_image == 0.0
    assert "set by the caller: gate" in clf.routing.chosen_on


def test_a_not_mine_row_feeds_the_gate_and_the_combiner():
    learned = router(threshold=-1e9, pairs=((0, 1), (0, 2), (1, 2)))
    with_row = SuperSubClassifier(scripted(learned, not_mine=True)[0], policy="topk").classify(images())
    without = SuperSubClassifier(scripted(learned, not_mine=False)[0], policy="topk").classify(images())
    assert [p.label for p in with_row] != [p.label for p in without]  # the row's log output is an input


def test_combiners_on_features_take_both_networks_features_and_refuse_a_network_without_them():
    rng = np.random.default_rng(5)
    width = 4
    pairs = {(0, 1): model(rng, 3 + 3 + 4 + 2 * width, 5)}
    learned = L.Learned(None, -1.0, pairs, width)  # the gate fires on every image
    r = R.parse(json.loads(json.dumps(routing_dict(learned))), 3, SIZES)
    assert r.learned.features == width and "on outputs and 4 features" in r.learned.describe()
    be, table = scripted(learned, seed=6)
    be.bundle.routing = R.Routing(0.6, 2, 1.0, "test", learned)
    pooled = {t: rng.normal(size=(64, width)) for t in (-1, 0, 1, 2)}
    be.features = lambda target, batch: pooled[target][batch[:, 0, 0, 0].astype(int)]
    clf = SuperSubClassifier(be, policy="topk")
    got, checked = clf.classify(images()), 0
    for i, p in enumerate(got):
        lp = L.log_softmax(table[-1][i], 3)
        r1, r2 = np.argsort(-lp, kind="stable")[:2]
        if {r1, r2} != {0, 1}:
            continue
        checked += 1
        lq = [L.with_not_mine(L.log_softmax(table[k][i], SIZES[k]), SIZES[k]) for k in (0, 1)]
        x = np.concatenate([lp, lq[0], lq[1], pooled[0][i], pooled[1][i]])
        j = int(pairs[(0, 1)](x).argmax())
        assert (p.superclass, p.subclass) == ((0, j) if j < 2 else (1, j - 2))
    assert checked >= 10
    be.features = None  # a model without the features output: one clear error
    with pytest.raises(Exception, match="gives no network features"):
        SuperSubClassifier(be, policy="topk").classify(images(8))
