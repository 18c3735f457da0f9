#!/usr/bin/env python
"""Gated top-2 with a learned gate and a learned combiner for each pair of routes.

On one dataset's given hierarchy (the runs of ``benchmarks/hierarchy_learning.py`` under
``--work``), the runtime's order of work is kept: the superclass network, then the first
route's subclass network, then, only where a gate fires, the second route's (one extra switch).

  * **gate**: either the superclass network's top probability (``p_max < gate``, as shipped:
    "top-probability"), or
    a logistic regression on what is known before the second switch: log p_super of both routes,
    and the first route's "not mine" probability and top and second class probabilities.  It is
    fitted to "the first answer is wrong and the true class lies in the second route's cluster",
    and fires on the images it scores highest, at a chosen share of the images.
  * **combiner**: for each unordered pair of clusters (a, b), a model from
    [log p_super, log q_a, log q_b] (each subclass network's whole output, "not mine" included)
    to the classes of a and b: multinomial logistic regression, or one hidden layer of 16.  It
    answers the images the gate sends down a second route; the others keep the first answer.

The gate kind, the combiner kind and the share of images gated (at most 0.19, so the test set
stays within 0.2 extra switches per image) are chosen by 2-fold cross-fitted accuracy on
``--val-images`` training images the runs never used; the choice is then refitted on all of
them and run once on the full test set.  Networks: the vanilla subclass networks, and the
"not mine" ones of ``routing_arbiter.py`` (cached in ``<run>-notmine<R>``).

Writes benchmarks/results/hierarchy/routing-combiner-<dataset>-given.json (seeds/ for seeds).

Usage (after hierarchy_learning.py --dataset D --work W):
  EDGETOOL_THREADS=2 python benchmarks/routing_combiner.py --dataset cifar10 --work W
  python benchmarks/routing_combiner.py --dataset cifar10 --across-seeds   # routing-combiner-seeds-cifar10.md
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import write_result  # noqa: E402
from routing_arbiter import across_seeds, fit_logistic, not_mine_networks, score  # noqa: E402
from routing_diagnosis import OUT, run_path, unused_training_images  # noqa: E402

RATES = tuple(np.round(np.arange(0.03, 0.191, 0.02), 2))
COMBINERS = {"logistic": 0, "one hidden layer of 16": 16}
GATE_KINDS = ("top-probability", "learned")


def log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def evidence(run, nets, x, y, extra):
    """Per image: log p_super, each subclass network's log output (a "not mine" column always:
    log 0 where the network has none), the two routes, the first answer, the gate's features."""
    from edgetool.toolchain import train as training

    members = run.hier.members(run.train.classes)
    lp = log_softmax(training.predict_logits(run.superclass(), x, run.hier.n_super).double().numpy())
    lq = []
    for k, net in enumerate(nets):
        n = len(members[k])
        q = log_softmax(training.predict_logits(net, x, n + extra).double().numpy())
        lq.append(q if extra else np.concatenate([q, np.full((len(q), 1), -30.0)], 1))
    rows = np.arange(len(y))
    order = np.argsort(-lp, axis=1, kind="stable")
    r1, r2 = order[:, 0], order[:, 1]
    own = [lq[k][i, : len(members[k])] for i, k in enumerate(r1)]  # the first route's classes
    top = np.array([np.sort(v)[-1] for v in own])
    second = np.array([np.sort(v)[-2] if len(v) > 1 else -30.0 for v in own])
    not_mine = np.array([lq[k][i, -1] for i, k in enumerate(r1)])
    gate = np.stack([lp[rows, r1], lp[rows, r2], not_mine, np.log1p(-np.exp(not_mine) + 1e-9), top, second], 1)
    first = np.array([members[k][int(np.argmax(v))] for k, v in zip(r1, own)])
    in_second = np.array([y[i] in members[k] for i, k in enumerate(r2)])
    return {
        "lp": lp,
        "lq": lq,
        "y": y,
        "r1": r1,
        "r2": r2,
        "first": first,
        "stage1": run.data.local[r1, y] < 0,
        "gate": gate,
        "p_max": np.exp(lp.max(1)),
        "recoverable": (first != y) & in_second,
        "members": members,
    }


def subset(ev, idx):
    """The evidence of images *idx* (members shared)."""
    out = {k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in ev.items()}
    out["lq"] = [q[idx] for q in ev["lq"]]
    return out


def gate(kind, fit_on):
    """A scorer of images, higher firing first: -p_max, or the logistic gate fitted on *fit_on*."""
    if kind == "top-probability":
        return lambda ev: -ev["p_max"]
    model = fit_logistic(fit_on["gate"], fit_on["recoverable"].astype(float))
    return lambda ev: score(model, ev["gate"])


def pair_inputs(ev, idx, a, b):
    return np.concatenate([ev["lp"][idx], ev["lq"][a][idx], ev["lq"][b][idx]], 1)


def pair_of(ev, a, b):
    return ((ev["r1"] == a) & (ev["r2"] == b)) | ((ev["r1"] == b) & (ev["r2"] == a))


def fit_combiners(ev, fire, hidden, l2=1e-3, seed=0):
    """One model per pair of clusters, fitted on the gated images whose class is in the pair."""
    import torch

    members, models = ev["members"], {}
    for a in range(len(members)):
        for b in range(a + 1, len(members)):
            cands = list(members[a]) + list(members[b])
            idx = np.nonzero(fire & pair_of(ev, a, b) & np.isin(ev["y"], cands))[0]
            if len(idx) < 30:
                continue
            x = torch.tensor(pair_inputs(ev, idx, a, b))
            t = torch.tensor([cands.index(c) for c in ev["y"][idx]])
            mu, sd = x.mean(0), x.std(0) + 1e-9
            torch.manual_seed(seed)
            linear = torch.nn.Linear(x.shape[1], hidden or len(cands))
            if hidden:
                linear = torch.nn.Sequential(linear, torch.nn.ReLU(), torch.nn.Linear(hidden, len(cands)))
            net = linear.double()
            opt = torch.optim.LBFGS(net.parameters(), max_iter=300)

            def closure(net=net, opt=opt, x=x, t=t, mu=mu, sd=sd):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(net((x - mu) / sd), t)
                loss = loss + l2 * sum((p**2).sum() for p in net.parameters())
                loss.backward()
                return loss

            opt.step(closure)
            models[(a, b)] = (net, mu, sd, np.array(cands))
    return models


def answers(models, ev, fire):
    """The first answer, replaced by the pair's combiner where the gate fired."""
    import torch

    pred = ev["first"].copy()
    for (a, b), (net, mu, sd, cands) in models.items():
        idx = np.nonzero(fire & pair_of(ev, a, b))[0]
        if len(idx):
            with torch.no_grad():
                pred[idx] = cands[net((torch.tensor(pair_inputs(ev, idx, a, b)) - mu) / sd).argmax(1).numpy()]
    return pred


def outcome(ev, fire, pred):
    right, top1 = pred == ev["y"], ev["first"] == ev["y"]
    n_err = int(ev["stage1"].sum())
    return {
        "accuracy": float(right.mean()),
        "top1_accuracy": float(top1.mean()),
        "stage1_errors": n_err,
        "recovered": int((ev["stage1"] & right).sum()),
        "recovered_fraction": float((ev["stage1"] & right).sum() / max(1, n_err)),
        "lost": int((top1 & ~right).sum()),
        "extra_switches_per_image": float(fire.mean()),
    }


def run_gated(fit_on, ev, s_fit, s, hidden, rate):
    """Threshold (the *rate* quantile of the gate scores *s_fit* of *fit_on*) and combiners fitted
    on *fit_on*; the outcome on *ev*, whose gate scores are *s*."""
    threshold = np.quantile(s_fit, 1.0 - rate)
    models = fit_combiners(fit_on, s_fit > threshold, hidden)
    fire = s > threshold
    return outcome(ev, fire, answers(models, ev, fire))


def fit_and_run(fit_on, ev, gate_kind, hidden, rate):
    """Gate, threshold and combiners fitted on *fit_on*; the outcome on *ev*."""
    g = gate(gate_kind, fit_on)
    return run_gated(fit_on, ev, g(fit_on), g(ev), hidden, rate)


def choose(ev_val, folds=2, seed=0):
    """Every gate kind x combiner x rate, scored by cross-fitted accuracy on validation (each
    fold's split and gate made once)."""
    fold = np.random.default_rng(seed).permutation(len(ev_val["y"])) % folds
    splits = [(subset(ev_val, fold != f), subset(ev_val, fold == f)) for f in range(folds)]
    n, table = len(ev_val["y"]), []
    for gate_kind in GATE_KINDS:
        scored = []
        for fit_on, held in splits:
            g = gate(gate_kind, fit_on)
            scored.append((fit_on, held, g(fit_on), g(held)))
        for name, hidden in COMBINERS.items():
            for rate in RATES:
                runs = [(run_gated(*sc, hidden, rate), len(sc[1]["y"])) for sc in scored]
                table.append(
                    {
                        "gate": gate_kind,
                        "combiner": name,
                        "rate": float(rate),
                        "cross_fitted_accuracy": sum(r["accuracy"] * m for r, m in runs) / n,
                        "cross_fitted_switches": sum(r["extra_switches_per_image"] * m for r, m in runs) / n,
                    }
                )
    return max(table, key=lambda r: r["cross_fitted_accuracy"]), table


def result_path(dataset):
    folder = os.path.join(OUT, "seeds") if "-seed" in dataset else OUT
    return os.path.join(folder, "routing-combiner-{}-given.json".format(dataset))


def main():
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.pipeline import Run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--work", default=os.path.join("edgetool-out", "bench-hierarchy"))
    ap.add_argument("--val-images", type=int, default=30000)
    ap.add_argument("--not-mine", type=float, default=4.0, help="the not-mine networks' outlier ratio")
    ap.add_argument("--across-seeds", action="store_true", help="only write routing-combiner-seeds-<dataset>.md")
    args = ap.parse_args()
    if args.across_seeds:
        what = "networks, gate, combiner and share of images gated"
        text = across_seeds(args.dataset, path_of=result_path, script="routing_combiner.py", what=what)
        with open(os.path.join(OUT, "routing-combiner-seeds-{}.md".format(args.dataset)), "w") as f:
            f.write(text)
        print(text)
        return
    t0 = time.perf_counter()
    run = Run.open(run_path(args.work, args.dataset, "given"), None, progress=False)
    xv, yv = unused_training_images(run, args.val_images)
    kinds = {
        "vanilla": ([run.vanilla(k) for k in range(run.hier.n_super)], 0),
        "not mine {:g}".format(args.not_mine): (not_mine_networks(run, args.not_mine), 1),
    }
    result = {
        "dataset": args.dataset,
        "hierarchy": "given",
        "machine": machine_name(),
        "validation": "{} training images the runs never used, 2-fold cross-fitted".format(len(yv)),
        "networks": {},
    }
    for name, (nets, extra) in kinds.items():
        ev_val = evidence(run, nets, xv, yv, extra)
        ev_test = evidence(run, nets, run.xte, run.yte.numpy(), extra)
        best, table = choose(ev_val)
        test = fit_and_run(ev_val, ev_test, best["gate"], COMBINERS[best["combiner"]], best["rate"])
        result["networks"][name] = {"chosen_on_validation": best, "test": test, "candidates": table}
        print(
            "{name}: {gate} gate, {combiner}, rate {rate}: recovered {recovered}/{stage1_errors} "
            "({recovered_fraction:.1%}) lost {lost} accuracy {accuracy:.2%} (top-1 {top1_accuracy:.2%}) at "
            "{extra_switches_per_image:.3f} extra switches".format(name=name, **best, **test)
        )
    name = max(result["networks"], key=lambda n: result["networks"][n]["chosen_on_validation"]["cross_fitted_accuracy"])
    d = result["networks"][name]
    router = "{} gate, {}".format(d["chosen_on_validation"]["gate"], d["chosen_on_validation"]["combiner"])
    result["chosen_on_validation"] = {"networks": name, "router": router, "test": d["test"]}
    result["seconds"] = time.perf_counter() - t0
    write_result(result_path(args.dataset), result)


if __name__ == "__main__":
    main()
