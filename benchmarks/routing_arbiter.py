#!/usr/bin/env python
"""Can a better second-route decision reach the recovery target?  Two routers beyond equation 2.

On one dataset's given hierarchy (the runs of ``benchmarks/hierarchy_learning.py`` under
``--work``), gated top-2 routing where the choice between the two routes is made by:

  * **a learned arbiter**: logistic regression on the two routes' evidence (log p_super of
    each, the subclass networks' top probability, margin and normalised entropy, and the
    "not mine" probability where the networks have one), fitted on the images of a validation
    split where the gate fires and exactly one route is right; the gate and the decision
    threshold are chosen on that split by accuracy, at no more than 0.2 extra switches; and the
    same arbiter given which class each route answers as well (one-hot, so it can learn which
    confusions to trust);
  * **subclass networks with a "not mine" output**: each fine-tune (the shared recipe) gets one
    more head row, trained on R images of other superclasses per own image (outlier exposure
    with a label instead of a uniform target), so a network can say that an image is not its
    own; the route is then chosen by the arbiter, and by p_super^beta x p_sub with p_sub the
    network's probability of its top class (lowered by the "not mine" mass).

The networks compared: vanilla, outlier exposure (``<run>-outliers1``, when trained), and
"not mine" (trained here into ``<run>-notmine<R>``, resumable).  The validation split is
``--val-images`` training images the runs never used (see ``routing_diagnosis.py``).

Writes benchmarks/results/hierarchy/routing-arbiter-<dataset>-given.json.

Usage (after hierarchy_learning.py --dataset D --outliers 1 --work W):
  EDGETOOL_THREADS=2 python benchmarks/routing_arbiter.py --dataset fashion-mnist --work W --confusable
  EDGETOOL_THREADS=2 python benchmarks/routing_arbiter.py --dataset cifar10 --work W
  (seeds: --dataset cifar10-seed1 after hierarchy_learning.py --seed 1; results go to seeds/)
  python benchmarks/routing_arbiter.py --dataset cifar10 --across-seeds   # routing-arbiter-seeds-cifar10.md
"""

import argparse
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

from common import write_result  # noqa: E402
from common.routing import (  # noqa: E402
    MAX_EXTRA,
    add_run_args,
    not_mine_networks,
    result_folder,
    run_path,
    softmax,
    unused_training_images,
    write_across_seeds,
)

THRESHOLDS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)


def outputs(run, nets, x, extra):
    """(p_super, [p_sub over the cluster's classes], [p "not mine"]) on *x*."""
    from edgetool.toolchain.train import fit as training

    p = softmax(training.predict_logits(run.superclass(), x, run.hier.n_super).double().numpy())
    qs, other = [], []
    for k, net in enumerate(nets):
        n = len(run.hier.subclasses[k])
        q = softmax(training.predict_logits(net, x, n + extra).double().numpy())
        qs.append(q[:, :n])
        other.append(q[:, n] if extra else np.zeros(len(q)))
    return p, qs, other


def evidence(run, p, qs, other, y):
    """Per image: features of route 1 against route 2, each route's answer, and stage-1 errors."""
    members = run.hier.members(run.train.classes)
    order = np.argsort(-p, axis=1, kind="stable")
    rows = np.arange(len(y))

    def route(r):
        top = np.array([qs[k][i].max() for i, k in enumerate(r)])
        second = np.array([np.sort(qs[k][i])[-2] if qs[k].shape[1] > 1 else 0.0 for i, k in enumerate(r)])
        ent = np.array(
            [-(qs[k][i] * np.log(qs[k][i] + 1e-12)).sum() / np.log(max(2, qs[k].shape[1])) for i, k in enumerate(r)]
        )
        o = np.array([other[k][i] for i, k in enumerate(r)])
        answer = np.array([members[k][qs[k][i].argmax()] for i, k in enumerate(r)])
        log_top = np.log(top + 1e-12)
        return np.log(p[rows, r] + 1e-12), log_top, log_top - np.log(second + 1e-12), ent, o, answer

    a, b = route(order[:, 0]), route(order[:, 1])
    mine = np.log1p(-a[4] + 1e-9) - np.log1p(-b[4] + 1e-9)
    feats = np.stack([a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], mine], 1)
    stage1 = run.data.local[order[:, 0], y] < 0
    return {"p_max": p.max(1), "features": feats, "first": a[5], "second": b[5], "stage1": stage1, "y": y}


def with_answers(ev, n_classes):
    """The evidence plus a one-hot of each route's answer (2 x n_classes more features)."""
    f = ev["features"]
    rows = np.arange(len(f))
    onehot = np.zeros((len(f), 2 * n_classes))
    onehot[rows, ev["first"]] = 1.0
    onehot[rows, n_classes + ev["second"]] = 1.0
    return dict(ev, features=np.concatenate([f, onehot], 1))


def fit_logistic(features, target):
    """Weights of a logistic regression (standardised features, a little L2), fitted with LBFGS."""
    from edgetool.toolchain.routing.learn import fit_logistic as fit

    m = fit(features, target)
    ((w, b),) = m.layers
    return {"mean": m.mean.tolist(), "std": m.std.tolist(), "weights": w[0].tolist() + b.tolist()}


def score(model, features):
    w = np.asarray(model["weights"])
    return ((features - np.asarray(model["mean"])) / np.asarray(model["std"])) @ w[:-1] + w[-1]


def outcome(ev, gate, take_second):
    fire = ev["p_max"] < gate
    pred = np.where(fire & take_second, ev["second"], ev["first"])
    right, top1 = pred == ev["y"], ev["first"] == ev["y"]
    return {
        "gate": gate,
        "accuracy": float(right.mean()),
        "top1_accuracy": float(top1.mean()),
        "stage1_errors": int(ev["stage1"].sum()),
        "recovered": int((ev["stage1"] & right).sum()),
        "recovered_fraction": float((ev["stage1"] & right).sum() / max(1, ev["stage1"].sum())),
        "lost": int((top1 & ~right).sum()),
        "extra_switches_per_image": float(fire.mean()),
    }


def arbiter(ev_val, ev_test):
    """Gate, threshold and weights chosen on validation; the test outcome of that choice."""
    from edgetool.toolchain.routing.search import GATES

    best = None
    for g in GATES:
        fire = ev_val["p_max"] < g
        split = fire & ((ev_val["first"] == ev_val["y"]) != (ev_val["second"] == ev_val["y"]))
        if fire.mean() > MAX_EXTRA or split.sum() < 20:
            continue
        model = fit_logistic(ev_val["features"][split], (ev_val["second"] == ev_val["y"])[split].astype(float))
        for thr in THRESHOLDS:
            r = outcome(ev_val, g, score(model, ev_val["features"]) > thr)
            if best is None or r["accuracy"] > best[0]["accuracy"]:
                best = (r, g, thr, model)
    assert best is not None
    r, g, thr, model = best
    test = outcome(ev_test, g, score(model, ev_test["features"]) > thr)
    return {"chosen_on_validation": {"gate": g, "threshold": thr, "validation": r, "model": model}, "test": test}


def result_path(dataset):
    """results/hierarchy/routing-arbiter-<dataset>-given.json; seeds/ for ``<dataset>-seedN``."""
    folder = result_folder(dataset)
    return os.path.join(folder, "routing-arbiter-{}-given.json".format(dataset))


def chosen(networks):
    """The networks and router a user would ship: the best arbiter accuracy on validation."""
    best = max(
        ((name, which) for name in networks for which in ("arbiter", "arbiter_with_answers")),
        key=lambda nw: networks[nw[0]][nw[1]]["chosen_on_validation"]["validation"]["accuracy"],
    )
    d = networks[best[0]][best[1]]
    val = d["chosen_on_validation"]["validation"]
    return {"networks": best[0], "router": best[1], "validation": val, "test": d["test"]}


ARBITER_CHOICES = "networks, arbiter, gate and threshold"


def main():
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.train.run import Run
    from edgetool.toolchain.routing.search import GATES, policy

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument(
        "--not-mine",
        type=float,
        nargs="+",
        default=[1.0, 4.0],
        help="other superclasses' images per own image, one set of networks each (at most all of them)",
    )
    ap.add_argument(
        "--confusable", action="store_true", help="also not-mine networks trained on confusable images (p_super draw)"
    )
    ap.add_argument(
        "--across-seeds",
        action="store_true",
        help="only write routing-arbiter-seeds-<dataset>.md from seed 0's and seeds 1 and 2's results",
    )
    args = ap.parse_args()
    if args.across_seeds:
        write_across_seeds(args.dataset, result_path, "routing_arbiter.py", ARBITER_CHOICES, "routing-arbiter")
        return
    t0 = time.perf_counter()
    path = run_path(args.work, args.dataset, "given")
    run = Run.open(path, None, progress=False)
    xv, yv = unused_training_images(run, args.val_images)
    yt = run.yte.numpy()
    kinds = {"vanilla": (run, [run.vanilla(k) for k in range(run.hier.n_super)], 0)}
    oe_path = path.rstrip("/") + "-outliers1"
    if os.path.isfile(os.path.join(oe_path, "config.json")):
        oe = Run.open(oe_path, None, progress=False)
        kinds["outlier exposure 1"] = (oe, [oe.vanilla(k) for k in range(oe.hier.n_super)], 0)
    for ratio in args.not_mine:
        kinds["not mine {:g}".format(ratio)] = (run, not_mine_networks(run, ratio), 1)
    if args.confusable:
        ratio = min(args.not_mine)
        kinds["not mine {:g}, confusable draw".format(ratio)] = (run, not_mine_networks(run, ratio, "confusable"), 1)
    result = {
        "dataset": args.dataset,
        "hierarchy": "given",
        "machine": machine_name(),
        "validation": "{} training images the runs never used".format(len(yv)),
        "networks": {},
    }
    members = run.hier.members(run.train.classes)
    for name, (r, nets, extra) in kinds.items():
        ov, ot = outputs(r, nets, xv, extra), outputs(r, nets, r.xte, extra)
        ev, et = evidence(r, *ov, yv), evidence(r, *ot, yt)
        n_classes = len(r.train.classes)
        d = {
            "arbiter": arbiter(ev, et),
            "arbiter_with_answers": arbiter(with_answers(ev, n_classes), with_answers(et, n_classes)),
        }
        if extra:  # equation 2 weighted, with p_sub lowered by the "not mine" mass
            best = None
            for g in GATES:
                for b in (0.1, 0.25, 0.5, 1.0):
                    v = policy(ov[0], ov[1], members, r.data.local, yv, g, 2, b)
                    if v["extra_switches_per_image"] <= MAX_EXTRA and (best is None or v["accuracy"] > best[0]):
                        best = (v["accuracy"], g, b)
            assert best is not None
            d["weighted_chosen_on_validation"] = policy(ot[0], ot[1], members, r.data.local, yt, best[1], 2, best[2])
        result["networks"][name] = d
        for which in ("arbiter", "arbiter_with_answers"):
            print(
                "{name}, {which}: gate {gate} recovered {recovered}/{stage1_errors} ({recovered_fraction:.0%}) lost "
                "{lost} accuracy {accuracy:.2%} (top-1 {top1_accuracy:.2%}) at {extra_switches_per_image:.3f} extra "
                "switches".format(name=name, which=which, **d[which]["test"])
            )
    result["chosen_on_validation"] = chosen(result["networks"])
    result["seconds"] = time.perf_counter() - t0
    write_result(result_path(args.dataset), result)


if __name__ == "__main__":
    main()
