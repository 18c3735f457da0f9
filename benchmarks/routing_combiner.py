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
import time

HERE = os.path.dirname(os.path.abspath(__file__))

from common import write_result  # noqa: E402
from common.routing import add_run_args, not_mine_networks, write_across_seeds  # noqa: E402
from common.routing import result_folder, run_path, unused_training_images  # noqa: E402


def evidence(run, nets, x, y, extra):
    """routing_learn's evidence of the superclass network and *nets* (with a "not mine" row
    where *extra* is 1) on images *x*."""
    from edgetool.toolchain.routing import learn
    from edgetool.toolchain.train import fit as training

    members = run.hier.members(run.train.classes)
    zp = training.predict_logits(run.superclass(), x, run.hier.n_super).double()
    zq = [training.predict_logits(net, x, len(members[k]) + extra).double() for k, net in enumerate(nets)]
    return learn.from_logits(run, zp, zq, y)


def fit_and_run(fit_on, ev, gate_kind, hidden, rate):
    """Gate, threshold and combiners fitted on *fit_on*; the outcome on *ev* (a pair without a
    combiner keeps the first answer)."""
    from edgetool.toolchain.routing import learn

    router = learn.fit(fit_on, learn.fit_gate(fit_on, gate_kind), hidden, rate)
    pred, fire = learn.replay(router, ev, beta=None)
    return learn.outcome(ev, fire, pred)


def result_path(dataset):
    return os.path.join(result_folder(dataset), "routing-combiner-{}-given.json".format(dataset))


def main():
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.routing import learn
    from edgetool.toolchain.train.run import Run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--not-mine", type=float, default=4.0, help="the not-mine networks' outlier ratio")
    ap.add_argument("--across-seeds", action="store_true", help="only write routing-combiner-seeds-<dataset>.md")
    args = ap.parse_args()
    if args.across_seeds:
        what = "networks, gate, combiner and share of images gated"
        write_across_seeds(args.dataset, result_path, "routing_combiner.py", what, "routing-combiner")
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
        best, table = learn.choose(ev_val, beta=None)
        test = fit_and_run(ev_val, ev_test, best["gate"], learn.COMBINERS[best["combiner"]], best["rate"])
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
