"""Learning gated top-2's gate and pair combiners, and the runtime following what was learned."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from edgetool.runtime.bundle import learned_routing as L  # noqa: E402
from edgetool.runtime.bundle import routing as R  # noqa: E402
from edgetool.runtime.backends.fake import FakeBackend, ScriptedBundle  # noqa: E402
from edgetool.runtime.classifier import SuperSubClassifier  # noqa: E402
from edgetool.toolchain.routing import learn  # noqa: E402

HIER = [("a", ["a0", "a1"]), ("b", ["b0", "b1", "b2"]), ("c", ["c0", "c1"])]
MEMBERS = [[0, 1], [2, 3, 4], [5, 6]]
CLUSTER = np.array([0, 0, 1, 1, 1, 2, 2])
LOCAL = np.array([[0, 1, -1, -1, -1, -1, -1], [-1, -1, 0, 1, 2, -1, -1], [-1, -1, -1, -1, -1, 0, 1]])


@pytest.fixture(autouse=True)
def few_rates(monkeypatch):
    """Two shares of images gated instead of nine, logistic combiners: the same search, a
    fraction of the fits (test_choose_scores_every_candidate_on_held_out_folds has both kinds)."""
    monkeypatch.setattr(learn, "RATES", (0.09, 0.19))
    monkeypatch.setattr(learn, "COMBINERS", {"logistic": 0})


def synthetic(n, seed, misroute=0.2, not_mine=True):
    """Logits of a superclass network that misroutes a share of the images with no sign in its
    own confidence, and subclass networks ("not mine" row last) that know their own classes and
    say "not mine" to the others' images: (superclass logits, [subclass logits], labels)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    t = CLUSTER[y]
    wrong = rng.random(n) < misroute
    shown = np.where(wrong, (t + rng.integers(1, 3, n)) % 3, t)
    zp = rng.normal(size=(n, 3))
    zp[np.arange(n), shown] += 2.5
    zp[np.arange(n), t] += np.where(wrong, 1.5, 0.0)  # the true cluster comes second when misrouted
    zq = []
    for k, m in enumerate(MEMBERS):
        z = rng.normal(size=(n, len(m) + 1))
        own = t == k
        z[own, LOCAL[k, y[own]]] += 3.0
        z[~own, len(m)] += 2.0 * rng.random((~own).sum())  # "not mine", more or less sure
        zq.append(z if not_mine else z[:, :-1])
    return zp, zq, y


def evidence_of(zp, zq, y):
    lq = [L.with_not_mine(L.log_softmax(z, z.shape[1]), len(m)) for z, m in zip(zq, MEMBERS)]
    return learn.evidence(L.log_softmax(zp, 3), lq, y, MEMBERS, LOCAL)


def test_the_learned_router_recovers_what_the_superclass_confidence_cannot_see():
    router, best = learn.learn(evidence_of(*synthetic(1500, 0)), beta=1.0)
    assert best["gate"] == "learned" and best["rate"] <= 0.19
    assert set(router.pairs) == {(0, 1), (0, 2), (1, 2)}
    test = evidence_of(*synthetic(4000, 1))
    pred, fire = learn.replay(router, test, beta=1.0)
    got = learn.outcome(test, fire, pred)
    assert got["extra_switches_per_image"] <= 0.2
    assert got["recovered_fraction"] >= 0.5 and got["accuracy"] > got["top1_accuracy"] + 0.08
    top_p = learn.fit(test, None, 0, best["rate"])  # the top-probability gate sees nothing here
    pred, fire = learn.replay(top_p, test, beta=1.0)
    assert learn.outcome(test, fire, pred)["recovered_fraction"] < got["recovered_fraction"] - 0.2


def test_choose_scores_every_candidate_on_held_out_folds(monkeypatch):
    monkeypatch.setattr(learn, "COMBINERS", {"logistic": 0, "one hidden layer of 16": 16})
    best, table = learn.choose(evidence_of(*synthetic(600, 2)), beta=None)
    assert len(table) == len(learn.GATE_KINDS) * len(learn.COMBINERS) * len(learn.RATES)
    assert best == max(table, key=lambda r: r["cross_fitted_accuracy"])
    assert all(abs(r["cross_fitted_switches"] - r["rate"]) < 0.02 for r in table)
    zp, zq, y = synthetic(600, 2)
    ev = evidence_of(zp, zq, y)
    with_features = learn.evidence(ev["lp"], ev["lq"], y, MEMBERS, LOCAL, pooled_of(y, 7))
    _, table = learn.choose(with_features, beta=None)  # each candidate with and without the features
    assert sorted({r["inputs"] for r in table}) == list(learn.INPUTS) and len(table) == 2 * len(learn.RATES) * 4


def pooled_of(y, seed):
    """Pooled features of each subclass network: noise, and a hint of the image's true cluster."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(len(y), 4)) + 1.5 * np.eye(4)[CLUSTER[y]] for _ in MEMBERS]


@pytest.mark.parametrize("not_mine, features", [(False, False), (True, False), (True, True)])
def test_the_runtime_gives_what_the_toolchain_replays(not_mine, features):
    """The classifier on scripted networks and replay() on the same logits (and features) answer alike."""
    zp, zq, y = synthetic(300, 3, not_mine=not_mine)
    pooled = pooled_of(y, 5) if features else None
    zp4, zq4, y4 = synthetic(1000, 4, not_mine=not_mine)
    ev4 = evidence_of(zp4, zq4, y4)
    if features:
        ev4 = learn.evidence(ev4["lp"], ev4["lq"], y4, MEMBERS, LOCAL, pooled_of(y4, 6))
    router, best = learn.learn(ev4, beta=0.5)
    assert (router.features == 4) == (best["inputs"] == "outputs and features")
    if features:
        router = learn.fit(ev4, learn.fit_gate(ev4, best["gate"]), 0, best["rate"], features=True)
    bundle = ScriptedBundle(HIER, routing=R.Routing(0.6, 2, 0.5, "test", router), not_mine=not_mine)

    def logits(target, batch):
        i = batch[:, 0, 0, 0].astype(int)
        z = zp[i] if target < 0 else zq[target][i]
        return np.pad(z, ((0, 0), (0, bundle.head_width - z.shape[1])))

    x = np.zeros((len(y), 1, 1, 1), dtype=np.float32)
    x[:, 0, 0, 0] = np.arange(len(y))

    def feats(target, batch):
        return pooled[target][batch[:, 0, 0, 0].astype(int)]

    clf = SuperSubClassifier(FakeBackend(bundle, logits, feats if features else None), policy="topk")
    got = np.array([MEMBERS[p.superclass][p.subclass] for p in clf.classify(x)])
    ev = evidence_of(zp, zq, y)
    if features:
        ev = learn.evidence(ev["lp"], ev["lq"], y, MEMBERS, LOCAL, pooled)
    pred, fire = learn.replay(router, ev, beta=0.5)
    assert (got == pred).all()
    assert clf.extra_passes_per_image == pytest.approx(fire.mean()) and 0 < fire.mean() < 0.25


def test_a_learned_bundle_serves_through_onnx_runtime(tiny_run, tmp_path, run_cli, sample_pngs):
    pytest.importorskip("onnxruntime")
    from edgetool.export.bundle import write_bundle
    from edgetool.runtime.backends.ort import OrtBackend
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.toolchain.routing import search as routing_eval

    base, subs = tiny_run.super_qat(), [tiny_run.sub_qat(k) for k in range(tiny_run.hier.n_super)]
    x, y = tiny_run.xte, tiny_run.yte.numpy()
    zp, zq, pooled = routing_eval.network_outputs(tiny_run, subs, x, base, features=True)
    ev = learn.from_logits(tiny_run, zp, zq, y, pooled)
    router = learn.fit(ev, learn.fit_gate(ev, "learned"), 0, 0.19, features=True)  # combiners on features
    assert router.features == pooled[0].shape[1] > 0 and router.pairs
    routing = R.Routing(0.6, 2, 1.0, "test images", router)
    out = str(tmp_path / "bundle")
    write_bundle(
        out,
        base,
        subs,
        tiny_run.hier,
        tiny_run.input_spec,
        samples=tiny_run.samples(),
        extra={"routing": routing.to_dict()},
    )
    assert json.loads(open(out + "/manifest.json").read())["routing"]["learned"] == router.to_dict()
    xs = x.numpy()
    with Bundle.open(out) as b, OrtBackend(b) as be:
        assert b.routing.learned is not None
        for k in range(tiny_run.hier.n_super):  # the graph's features output: the QAT network's pooled activations
            be.switch(k)
            logits, f = be.infer_features(xs[:64])
            np.testing.assert_allclose(logits, be.infer(xs[:64]))
            assert np.abs(f - pooled[k][:64]).max() <= 0.05 * np.abs(pooled[k]).max()
        clf = SuperSubClassifier(be, policy="topk")
        members = tiny_run.hier.members(tiny_run.train.classes)
        got = np.array([members[p.superclass][p.subclass] for p in clf.classify(xs)])
        doctor_and_older_models(b, be, xs[:16], router.features)
    pred, fire = learn.replay(router, ev, beta=1.0)
    assert (got == pred).mean() >= 0.97  # int8 through ONNX Runtime against the QAT networks in torch
    assert clf.extra_passes_per_image == pytest.approx(fire.mean(), abs=0.02)
    proc = run_cli("inspect", out)
    assert proc.returncode == 0 and "routing     topk: learned: " in proc.stdout, proc.stderr
    proc = run_cli("classify", out, *sample_pngs, "--policy", "topk", "--json")
    assert proc.returncode == 0 and proc.stderr.startswith("routing: topk learned: "), proc.stderr
    assert len(proc.stdout.splitlines()) == len(sample_pngs)


def doctor_and_older_models(b, be, xs, width):
    """Doctor compares the features the router reads, not only the logits; a model exported
    without the features output is refused for a router that reads them."""
    import onnx

    from edgetool.runtime import doctor
    from edgetool.runtime.errors import BundleError

    checks: list = []

    def add(name, status, detail=""):
        checks.append((status, detail))

    reference = doctor.ort_reference(add, b, xs)
    doctor.compare_to_reference(add, be, b, xs, reference, 0.05)
    assert checks[-1][0] == doctor.PASS and "the router's features 0.00% of their range" in checks[-1][1]
    reference[0][1][:, 0] += 1.0  # a network whose features drift fails, its logits alike
    doctor.compare_to_reference(add, be, b, xs, reference, 0.05)
    assert checks[-1][0] == doctor.FAIL and "top-1 agrees" in checks[-1][1], checks[-1]
    older = onnx.load_from_string(b.base_onnx())
    del older.graph.output[1]
    why = "routing.learned.features is {}, the model's 'features' output has dims None".format(width)
    with pytest.raises(BundleError, match=why):
        b._check_graph(older.SerializeToString())


def test_export_keeps_the_learned_router_only_where_it_beats_equation_2(tiny_run, monkeypatch):
    from edgetool.toolchain.routing import search as routing_eval

    base, subs = tiny_run.super_qat(), [tiny_run.sub_qat(k) for k in range(tiny_run.hier.n_super)]
    data = (tiny_run.xte, tiny_run.yte.numpy())
    monkeypatch.setattr(learn, "MIN_IMAGES", 10**6)
    plain = routing_eval.bundle_routing(tiny_run, base, subs, data=data)["routing"]
    assert "learned" not in plain and plain["chosen_on"].startswith("given images (300 images)")
    monkeypatch.setattr(learn, "MIN_IMAGES", 100)
    eq2 = routing_eval.policy(
        *routing_eval.network_probs(tiny_run, subs, data[0], base),
        tiny_run.hier.members(tiny_run.train.classes),
        tiny_run.data.local,
        data[1],
        plain["gate"],
        2,
        plain["beta"],
    )["accuracy"]
    for cross_fitted in (eq2 - 0.01, eq2 + 0.01):
        monkeypatch.setattr(
            learn,
            "choose",
            lambda ev, beta, a=cross_fitted: (
                {
                    "gate": "learned",
                    "combiner": "logistic",
                    "inputs": "outputs and features",
                    "rate": 0.1,
                    "cross_fitted_accuracy": a,
                },
                [],
            ),
        )
        r = routing_eval.bundle_routing(tiny_run, base, subs, data=data)["routing"]
        assert ("learned" in r) == (cross_fitted > eq2)
        if "learned" in r:
            assert r[
                "chosen_on"
            ] == "given images (300 images): learned router {:.2%} (cross-fitted), equation 2 {:.2%}".format(
                cross_fitted, eq2
            )
            learned = R.parse(r, tiny_run.hier.n_super, [len(s) for s in tiny_run.hier.subclasses]).learned
            assert (
                learned is not None
                and learned.features == routing_eval.network_outputs(tiny_run, subs, data[0], base, True)[2][0].shape[1]
            )
