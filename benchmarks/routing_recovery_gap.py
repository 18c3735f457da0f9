#!/usr/bin/env python
"""Where gated top-2 loses the stage-1 errors it could recover: int8 or float networks, the
gate or the combiner, or the evidence of the second route.

The float "not mine" networks of ``routing_combiner.py`` and the int8 bundles of
``routing_bundle.py`` are routed by the same method (learned gate and pair combiners); the int8
ones recovered less on the run it was first measured on.  Two things differ: the superclass
network (float, or int8 after QAT) and the subclass networks (full float fine-tunes from the
flat run's superclass network, or QAT fine-tunes of the int8 superclass network under the delta
budget, scales frozen).  This script swaps them one at a time on one seed's given hierarchy,
and adds int8 subclass networks trained with other settings (``--variants``), each under its
own folder beside the run:

  * ``dense``: no delta budget (every int8 code may move);
  * ``ste``: the budget kept, but the weights' gradient passes straight through past +-127
    codes (``qat_weight_grad=ste``);
  * any other ``--delta-budget`` value, e.g. ``0.02`` or ``patch``.

A last row keeps the shipped int8 networks but runs, as the second route, a float "pair
network" over the classes of both routes' clusters (fine-tuned from the superclass network,
one per pair of clusters, cached in ``<run>-pairs``): the combiner then sees log p_super, the
first route's output and the pair network's, still one extra switch per gated image.

Every row gets the same router search: gate kind, combiner and share of images gated chosen by
2-fold cross-fitted accuracy on ``--val-images`` training images the run never used, refitted
on all of them, then run once on the full test set (torch; the int8 networks as QAT simulates
them, which ONNX Runtime matches closely).  Each row reports the stage-1 errors the second
route could fix (true class in its cluster and its answer right), how many of those the gate
sends down the second route, how many the combiner then fixes, and the networks' accuracies.

Writes benchmarks/results/hierarchy/routing-recovery-gap-<dataset>.{json,md} (seeds/ for seeds).

Usage (after hierarchy_learning.py --dataset D --work W):
  EDGETOOL_THREADS=2 python benchmarks/routing_recovery_gap.py --dataset fashion-mnist --work W --variants dense ste
"""

import argparse
import json
import os
import shutil
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

from common import write_result  # noqa: E402
from common.routing import add_run_args, not_mine_networks, result_folder, run_path, unused_training_images  # noqa: E402
from common.runs import not_mine_run  # noqa: E402


def variant_run(nm_path: str, variant: str) -> str:
    """A copy of the "not mine" run at *nm_path* whose int8 subclass networks are trained with
    *variant*; it shares the flat, superclass and int8 superclass networks (copied)."""
    folder = "{}-{}".format(nm_path.rstrip("/"), variant.replace("%", "pct"))
    if not os.path.isfile(os.path.join(folder, "config.json")):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(nm_path, "config.json")) as f:
            cfg = json.load(f)
        if variant == "ste":
            cfg["qat_weight_grad"] = "ste"
        else:
            cfg["delta_budget"] = variant
        for name in ("flat.pt", "super.pt", "super_qat.pt"):
            shutil.copy(os.path.join(nm_path, name), os.path.join(folder, name))
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
    return folder


def auroc(own: np.ndarray, other: np.ndarray) -> float:
    """P(score of an other-cluster image > score of an own image), ties half (Mann-Whitney)."""
    scores = np.concatenate([own, other])
    ranks = np.argsort(np.argsort(scores, kind="stable"), kind="stable") + 1.0
    for v in np.unique(scores):  # average ranks of ties
        tie = scores == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    r_other = ranks[len(own) :].sum()
    return float((r_other - len(other) * (len(other) + 1) / 2) / (len(own) * len(other)))


def network_quality(run, ev) -> dict:
    """Superclass accuracy, subclass accuracy on their own clusters' images, and how well each
    "not mine" row tells other clusters' images from its own (AUROC), on *ev*'s images."""
    y, local = ev["y"], run.data.local
    sup_right = local[ev["r1"], y] >= 0
    sub_right, nm_auc = [], []
    for k, m in enumerate(ev["members"]):
        own = local[k, y] >= 0
        lq = ev["lq"][k]
        sub_right.append(np.asarray(m)[lq[own, : len(m)].argmax(1)] == y[own])
        nm_auc.append(auroc(lq[own, len(m)], lq[~own, len(m)]))
    return {
        "superclass_accuracy": float(sup_right.mean()),
        "subclass_accuracy_own_images": float(np.concatenate(sub_right).mean()),
        "not_mine_auroc_mean": float(np.mean(nm_auc)),
        "not_mine_auroc": [float(a) for a in nm_auc],
    }


def ceiling(ev) -> dict:
    """Stage-1 errors a second route could fix: true class in its cluster, and its answer (the
    pair network's, where the evidence has them) right."""
    fixable = ev["stage1"] & (ev.get("pair_answer", ev["second"]) == ev["y"])
    return {
        "stage1_errors": int(ev["stage1"].sum()),
        "true_class_in_second_route": int((ev["stage1"] & ev["recoverable"]).sum()),
        "second_route_answers_right": int(fixable.sum()),
        "ceiling_fraction": float(fixable.sum() / max(1, ev["stage1"].sum())),
    }


def pair_networks(run):
    """Float networks over the classes of each pair of clusters, fine-tuned from the superclass
    network with the run's fine-tune recipe (no outliers); cached in ``<run>-pairs``:
    {(a, b): (network, its classes)}."""
    import torch

    from edgetool.toolchain.train import fit as training
    from edgetool.toolchain.train import models
    from edgetool.toolchain.train.checkpoints import float_from_state, float_state, load_checkpoint, save_checkpoint

    members, n = run.hier.members(run.train.classes), run.hier.n_super
    out = {}
    for a in range(n):
        for b in range(a + 1, n):
            path = os.path.join(run.path.rstrip("/") + "-pairs", "{}-{}.pt".format(a, b))
            cands = list(members[a]) + [c for c in members[b] if c not in members[a]]
            if not os.path.isfile(path):
                m = run.new_model(len(cands))
                sd = run.superclass().state_dict()
                models.load_trunk(m, sd)
                ytr = run.ytr.numpy()
                mask = np.isin(ytr, cands)
                y = torch.tensor([cands.index(c) for c in ytr[mask]])
                recipe = run.recipe(run.cfg.ft_epochs, run.cfg.ft_lr, weight_decay=run.cfg.ft_weight_decay)
                hooks = training.FitHooks("pair network {}-{}".format(a, b), run.progress)
                seed = run.cfg.seed + 100 + a * n + b
                training.fit(m, run.xtr[torch.from_numpy(mask)], y, recipe, n_valid=len(cands), seed=seed, hooks=hooks)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                save_checkpoint(float_state(m), path)
            out[(a, b)] = (float_from_state(load_checkpoint(path)), cands)
    return out


def pair_net_inputs(ev, idx, a, b, features=False):
    """The inputs routing_learn's combiners take in this experiment, for pair (a, b): log
    p_super, the first route's subclass output (the other route's block zero), which route came
    first, and the pair network's log output, in place of both subclass networks' outputs.  The
    evidence carries the pair networks' log outputs under ``"pair"`` (a dict of per-image
    arrays, which routing_learn's ``subset`` splits like the rest); no pooled features."""
    first_a = (ev["r1"][idx] == a)[:, None]
    qa = np.where(first_a, ev["lq"][a][idx], 0.0)
    qb = np.where(first_a, 0.0, ev["lq"][b][idx])
    return np.concatenate([ev["lp"][idx], first_a.astype(float), qa, qb, ev["pair"][(a, b)][idx]], 1)


def with_pairs(ev, pairs, x):
    """*ev* with the pair networks' log outputs on images *x* (``"pair"``) and, per image, the
    answer of the pair network of its two routes (``"pair_answer"``)."""
    import torch

    from edgetool.toolchain.routing import learn
    from edgetool.toolchain.train import fit as training

    ev = dict(ev)
    ev["pair"] = {
        k: torch.log_softmax(training.predict_logits(net, x, len(c)).double(), 1).numpy()
        for k, (net, c) in pairs.items()
    }
    ev["pair_answer"] = np.zeros(len(ev["y"]), dtype=np.int64)
    for (a, b), (_, cands) in pairs.items():
        idx = np.nonzero(learn.pair_of(ev, a, b))[0]
        ev["pair_answer"][idx] = np.asarray(cands)[ev["pair"][(a, b)][idx].argmax(1)]
    return ev


def measure(run, base, nets, val, test, pairs=None) -> dict:
    """The router chosen and refitted on *val*, run on *test*; with *pairs*, the second route
    runs the pair network instead of its subclass network."""
    from edgetool.toolchain.routing import search as routing_eval
    from edgetool.toolchain.routing import learn

    ev_val, ev_test = (
        learn.from_logits(run, *routing_eval.network_logits(run, nets, x, base), y) for x, y in (val, test)
    )
    if pairs:
        ev_val, ev_test = with_pairs(ev_val, pairs, val[0]), with_pairs(ev_test, pairs, test[0])
    make = pair_net_inputs if pairs else learn.pair_inputs
    best, _ = learn.choose(ev_val, beta=None, make_inputs=make)
    gate, hidden = learn.fit_gate(ev_val, best["gate"]), learn.COMBINERS[best["combiner"]]
    router = learn.fit(ev_val, gate, hidden, best["rate"], make_inputs=make)
    pred, fire = learn.replay(router, ev_test, beta=None, make_inputs=make)
    fixable = ev_test["stage1"] & (ev_test.get("pair_answer", ev_test["second"]) == ev_test["y"])
    caught = fixable & fire
    return {
        "chosen_on_validation": best,
        "test": learn.outcome(ev_test, fire, pred),
        "ceiling": ceiling(ev_test),
        "gate_caught": int(caught.sum()),
        "combiner_fixed_of_caught": int((caught & (pred == ev_test["y"])).sum()),
        "networks": network_quality(run, ev_test),
    }


HEADER = (
    "| superclass network | subclass networks | stage-1 errors | fixable by the second route | caught by the gate "
    "| fixed by the combiner | right answers lost | accuracy (its top-1) | extra switches / image "
    "| superclass accuracy | subclass accuracy | not-mine AUROC |"
)


def table_row(r) -> str:
    t, c, q = r["test"], r["ceiling"], r["networks"]
    cells = "| {} | {} | {} | {} ({:.0%}) | {} | **{} ({:.1%})** | {} | {:.2%} ({:.2%}) | {:.3f} | {:.2%} | {:.2%} "
    cells += "| {:.3f} |"
    return cells.format(
        r["superclass_network"],
        r["subclass_networks"],
        t["stage1_errors"],
        c["second_route_answers_right"],
        c["ceiling_fraction"],
        r["gate_caught"],
        t["recovered"],
        t["recovered_fraction"],
        t["lost"],
        t["accuracy"],
        t["top1_accuracy"],
        t["extra_switches_per_image"],
        q["superclass_accuracy"],
        q["subclass_accuracy_own_images"],
        q["not_mine_auroc_mean"],
    )


def table(result) -> str:
    lines = [
        "## {}: where gated top-2 loses the stage-1 errors it could recover".format(result["dataset"]),
        "",
        "Written by `benchmarks/routing_recovery_gap.py`; measured on {}. Hierarchy: {}. Each row's gate, "
        "combiner and share gated are chosen on {}, then run once on the full test set ({} images). "
        "Fixed by the combiner: the stage-1 errors recovered.".format(
            result["machine"], result["hierarchy"], result["validation"], result["test_images"]
        ),
        "",
        HEADER,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(lines + [table_row(r) for r in result["pairings"]]) + "\n"


def main():
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.train.run import Run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--not-mine", type=float, default=4.0, help="the not-mine networks' outlier ratio")
    ap.add_argument("--variants", nargs="*", default=[], help="int8 subclass networks also trained so")
    args = ap.parse_args()
    t0 = time.perf_counter()
    flat = run_path(args.work, args.dataset, "given")
    nm = Run.open(not_mine_run(flat, args.not_mine), progress=False)
    # the float "not mine" networks of routing_arbiter.py, fine-tuned from the flat run's superclass network
    float_subs = not_mine_networks(Run.open(flat, progress=False), args.not_mine)
    n = nm.hier.n_super
    int8_subs = {"delta budget {}".format(nm.cfg.delta_budget): [nm.sub_qat(k) for k in range(n)]}
    for v in args.variants:
        r = Run.open(variant_run(nm.path, v), progress=False)
        int8_subs["ste" if v == "ste" else "delta budget {}".format(v)] = [r.sub_qat(k) for k in range(n)]
    val = unused_training_images(nm, args.val_images)
    test = (nm.xte, nm.yte.numpy())
    supers = {"float": nm.superclass(), "int8": nm.super_qat()}
    shipped = "int8, delta budget {}".format(nm.cfg.delta_budget)
    pairings = [("float", "float", float_subs, None), ("int8", "float", float_subs, None)]
    pairings += [(s, "int8, " + name, nets, None) for name, nets in int8_subs.items() for s in ("float", "int8")]
    pairings.append(("int8", shipped + "; pair networks (float) as the second route", int8_subs[shipped[6:]], "pairs"))
    result = {
        "dataset": args.dataset,
        "hierarchy": "given, not mine {:g}".format(args.not_mine),
        "machine": machine_name(),
        "validation": "{} training images the runs never used, 2-fold cross-fitted".format(len(val[1])),
        "test_images": len(test[1]),
        "pairings": [],
    }
    for sup, subs, nets, pairs in pairings:
        r = measure(nm, supers[sup], nets, val, test, pair_networks(nm) if pairs else None)
        r.update(superclass_network=sup, subclass_networks=subs)
        result["pairings"].append(r)
        print(table_row(r), flush=True)
    result["seconds"] = time.perf_counter() - t0
    folder = result_folder(args.dataset)
    write_result(os.path.join(folder, "routing-recovery-gap-{}.json".format(args.dataset)), result)
    with open(os.path.join(folder, "routing-recovery-gap-{}.md".format(args.dataset)), "w") as f:
        f.write(table(result))


if __name__ == "__main__":
    main()
