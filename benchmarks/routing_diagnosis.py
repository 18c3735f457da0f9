#!/usr/bin/env python
"""Why gated top-2 recovers few stage-1 errors: a diagnosis on the runs of hierarchy_learning.py.

For one hierarchy of one dataset (its runs trained by ``benchmarks/hierarchy_learning.py``
under the same ``--work`` folder), on the full test set:

  1. at the largest gate within 0.2 extra switches per image, the stage-1 errors a second route
     could recover (its subclass network outputs the class), and on those images the mean
     probability the superclass network gives the first and the second route, and the mean
     confidence of each route's subclass network (against the same means on images top-1
     routes right but the gate sends down a second route too);
  2. equation 2 with the superclass probability weighted less, p_super^beta x p_sub, at that
     gate for several beta, and with beta and the gate chosen together on the validation split;
  3. temperature scaling (one temperature per network, fitted to the validation split's
     negative log-likelihood), then gated top-2 with the gate chosen on validation;
  4. with ``--confusable R``: the subclass networks fine-tuned with outlier exposure whose R
     outlier images per own image are drawn in proportion to the superclass network's
     probability of the cluster (the images it confuses with the cluster), not uniformly.

Each is done for the vanilla subclass networks and, where hierarchy_learning.py trained them
(``--outliers``), for the ones fine-tuned with outlier exposure.

Writes benchmarks/results/hierarchy/routing-diagnosis-<dataset>-<hierarchy>.json.

Usage (after hierarchy_learning.py --dataset D --outliers 1 --work W):
  EDGETOOL_THREADS=2 python benchmarks/routing_diagnosis.py --dataset fashion-mnist --work W --confusable 0.5
"""

import argparse
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

from common import write_result  # noqa: E402
from common.routing import (  # noqa: E402
    MAX_EXTRA,
    OUT,
    confusable_draw,
    run_path,
    softmax,
    unused_training_images,
)

BETAS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0)


def logits(run, nets, x):
    from edgetool.toolchain.train import fit as training

    n = run.hier.n_super
    lp = training.predict_logits(run.superclass(), x, n).double().numpy()
    ls = [training.predict_logits(net, x, len(run.hier.subclasses[k])).double().numpy() for k, net in enumerate(nets)]
    return lp, ls


def largest_gate(p, max_extra=MAX_EXTRA):
    from edgetool.toolchain.routing.search import GATES

    return max(g for g in GATES if float((p.max(1) < g).mean()) <= max_extra)


def diagnose(run, nets, val=None):
    from edgetool.toolchain.train import fit as training
    from edgetool.toolchain.routing.search import GATES, choose_gate, policy, recoverable

    members = run.hier.members(run.train.classes)
    local = run.data.local
    if val is None:
        xv, yv = training.to_tensor(run.data.val, run.mean, run.std), np.asarray(run.data.val.labels)
    else:
        xv, yv = val
    yt = run.yte.numpy()
    lv, lt = logits(run, nets, xv), logits(run, nets, run.xte)
    pv, qv = softmax(lv[0]), [softmax(q) for q in lv[1]]
    pt, qt = softmax(lt[0]), [softmax(q) for q in lt[1]]
    out = {}

    # 1. where the second route holds the answer, what each route's networks say
    g = largest_gate(pt)
    rows = np.arange(len(yt))
    order = np.argsort(-pt, axis=1, kind="stable")
    first, second = order[:, 0], order[:, 1]
    q_best = np.stack([q.max(1) for q in qt], 1)
    stage1 = local[first, yt] < 0
    reach = stage1 & recoverable(pt, qt, members, yt, g, 2)
    top1_right = np.array([members[c][qt[c][i].argmax()] for i, c in enumerate(first)]) == yt
    fired_right = top1_right & (pt[rows, first] < g)

    def means(mask):
        return {
            "images": int(mask.sum()),
            "p_super_first": float(pt[rows, first][mask].mean()) if mask.any() else None,
            "p_super_second": float(pt[rows, second][mask].mean()) if mask.any() else None,
            "p_sub_first": float(q_best[rows, first][mask].mean()) if mask.any() else None,
            "p_sub_second": float(q_best[rows, second][mask].mean()) if mask.any() else None,
        }

    out["at_gate"] = {
        "gate": g,
        "chosen_on": "test set: the largest gate within {} extra switches per image".format(MAX_EXTRA),
        "stage1_errors": int(stage1.sum()),
        "recoverable": means(reach),
        "routed_right_and_sent_down_a_second_route": means(fired_right),
    }

    # 2. p_super weighted less
    out["weighted"] = {"at_gate": [policy(pt, qt, members, local, yt, g, 2, b) for b in BETAS]}
    best = None
    for b in BETAS:
        for gg in GATES:
            r = policy(pv, qv, members, local, yv, gg, 2, b)
            if r["extra_switches_per_image"] <= MAX_EXTRA and (best is None or r["accuracy"] > best[0]):
                best = (r["accuracy"], gg, b)
    assert best is not None
    out["weighted"]["chosen_on_validation"] = policy(pt, qt, members, local, yt, best[1], 2, best[2])
    out["weighted"]["validation_stage1_errors"] = int((local[pv.argmax(1), yv] < 0).sum())
    out["weighted"]["validation_images"] = int(len(yv))

    # 3. temperature scaling on validation
    def fit_t(z, y):
        ts = np.exp(np.linspace(np.log(0.25), np.log(8.0), 64))
        nll = [float(-np.log(softmax(z, t)[np.arange(len(y)), y] + 1e-12).mean()) for t in ts]
        return float(ts[int(np.argmin(nll))])

    t_super = fit_t(lv[0], run.sup_of[yv])
    t_sub = []
    for k in range(run.hier.n_super):
        idx = np.nonzero(local[k, yv] >= 0)[0]
        t_sub.append(fit_t(lv[1][k][idx], local[k, yv[idx]]))
    pv_c, qv_c = softmax(lv[0], t_super), [softmax(z, t) for z, t in zip(lv[1], t_sub)]
    pt_c, qt_c = softmax(lt[0], t_super), [softmax(z, t) for z, t in zip(lt[1], t_sub)]
    gc = choose_gate(pv_c, qv_c, members, local, yv, 2)
    out["temperature"] = {
        "superclass": t_super,
        "subclass": t_sub,
        "gated_top2": policy(pt_c, qt_c, members, local, yt, gc, 2),
    }
    return out


def confusable_outliers(run, ratio):
    """Outlier exposure with outliers drawn in proportion to the superclass network's
    probability of the cluster; a sibling run sharing flat.pt and super.pt."""
    import torch

    from edgetool.toolchain.train import fit as training
    from common.runs import sibling

    oe = sibling(run, "-confusable{:g}".format(ratio), False, ft_outliers=ratio)
    p = torch.softmax(training.predict_logits(oe.superclass(), oe.xtr, oe.hier.n_super).double(), 1)

    def fine_tune_data(k):
        mask = oe.sub_mask(k)
        pick = confusable_draw(p, torch.nonzero(~mask).flatten(), k, ratio * int(mask.sum()), oe.cfg.seed * 1009 + k)
        y = torch.from_numpy(oe.data.local[k])[oe.ytr[mask]]
        return training.with_outliers(oe.xtr[mask], y, oe.xtr, pick, ratio, oe.cfg.seed)

    oe.fine_tune_data = fine_tune_data  # this experiment's draw; the product draws uniformly
    return oe


def main():
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.train.run import Run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--hierarchy", default="given")
    ap.add_argument("--work", default=os.path.join("edgetool-out", "bench-hierarchy"))
    ap.add_argument("--outliers", type=float, default=1.0, help="the ratio hierarchy_learning.py --outliers used")
    ap.add_argument("--confusable", type=float, default=0.0, help="also train confusable-outlier networks")
    ap.add_argument(
        "--val-images",
        type=int,
        default=0,
        help="choose beta and the gate on this many training images the run never used (default: its validation split)",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    path = run_path(args.work, args.dataset, args.hierarchy)
    run = Run.open(path, None, progress=False)
    val = unused_training_images(run, args.val_images) if args.val_images else None
    result = {
        "dataset": args.dataset,
        "hierarchy": args.hierarchy,
        "machine": machine_name(),
        "validation": "{} training images the run never used".format(len(val[1]))
        if val is not None
        else "the run's validation split ({} images)".format(len(run.data.val)),
        "networks": {"vanilla": diagnose(run, [run.vanilla(k) for k in range(run.hier.n_super)], val)},
    }
    oe_path = path.rstrip("/") + "-outliers{:g}".format(args.outliers)
    if os.path.isfile(os.path.join(oe_path, "config.json")):
        oe = Run.open(oe_path, None, progress=False)
        result["networks"]["outlier exposure {:g}".format(args.outliers)] = diagnose(
            oe, [oe.vanilla(k) for k in range(oe.hier.n_super)], val
        )
    if args.confusable:
        oe = confusable_outliers(run, args.confusable)
        result["networks"]["confusable outliers {:g}".format(args.confusable)] = diagnose(
            oe, [oe.vanilla(k) for k in range(oe.hier.n_super)], val
        )
    result["seconds"] = time.perf_counter() - t0
    suffix = "-val{}".format(args.val_images) if args.val_images else ""
    dest = os.path.join(OUT, "routing-diagnosis-{}-{}{}.json".format(args.dataset, args.hierarchy, suffix))
    write_result(dest, result)
    for name, d in result["networks"].items():
        a = d["at_gate"]
        r = a["recoverable"]
        w = d["weighted"]["chosen_on_validation"]
        t = d["temperature"]["gated_top2"]
        print(
            "{}: gate {} recoverable {}/{} (p_super {:.2f} vs {:.2f}, p_sub {:.2f} vs {:.2f}); "
            "beta on val {} gate {}: recovered {} lost {}; T {:.2f}: recovered {} lost {}".format(
                name,
                a["gate"],
                r["images"],
                a["stage1_errors"],
                r["p_super_first"] or 0,
                r["p_super_second"] or 0,
                r["p_sub_first"] or 0,
                r["p_sub_second"] or 0,
                w["beta"],
                w["gate"],
                w["recovered"],
                w["lost"],
                d["temperature"]["superclass"],
                t["recovered"],
                t["lost"],
            )
        )
        for x in d["weighted"]["at_gate"]:
            print("   beta {beta}: recovered {recovered} lost {lost} accuracy {accuracy:.2%}".format(**x))


if __name__ == "__main__":
    main()
