#!/usr/bin/env python
"""Can the subclass networks beat a converged flat network?  Specialists fine-tuned from it.

On the runs of ``benchmarks/fair_verdict.py`` (one per seed, each with its 10% validation split),
the flat network trained for the whole Super-Sub pipeline's image passes (the equal-budget
control, fp32, before its QAT) is the starting point of every specialist:

* routing: the flat network's implied superclass (its softmax summed over each superclass's
  classes), no superclass network;
* specialist k: a copy of the flat network fine-tuned on superclass k's training images, the
  loss over k's classes only (AdamW, random flips as the run trains); for each superclass the
  (learning rate, epoch) with the best accuracy on k's validation images is kept, epoch 0 (the
  flat network itself) included, so on validation no specialist is worse than the flat network;
* measured once on the full test split: the flat network alone, the flat network read through
  the same two stages (its implied superclass, then its best class inside it), the routed
  specialists, and the flat network and the specialists told the true superclass; the paired
  bootstrap pools the seeds.

fp32, torch: whether the recipe can win at all, before it would be made int8 deltas.
Writes benchmarks/results/fair/<dataset>/specialists.json.

Usage:  python benchmarks/flat_specialists.py --dataset sample --work edgetool-out/fair-sample
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

from common import RESULTS, write_result  # noqa: E402

LRS = (1e-3, 3e-4)
EPOCHS = 6


def restricted_argmax(logits, classes):
    """Per row: the class among *classes* with the largest logit."""
    sub = logits[:, classes]
    return classes[sub.argmax(1)]


def logits_of(model, x, batch=512):
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy()


def fine_tune(flat, x, y, classes, xv, yv, lr, seed):
    """[(epoch, validation accuracy, state)] for epochs 0..EPOCHS of one specialist."""
    import torch

    torch.manual_seed(seed)
    net = copy.deepcopy(flat)
    mask = torch.full((logits_of(flat, x[:1]).shape[1],), float("-inf"))
    mask[torch.as_tensor(classes)] = 0.0
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    out = [(0, float((restricted_argmax(logits_of(net, xv), classes) == yv).mean()), copy.deepcopy(net.state_dict()))]
    rng = np.random.default_rng(seed)
    for epoch in range(1, EPOCHS + 1):
        net.train()
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // 128)):
            xb, yb = x[idx], y[idx]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb = torch.where(flip.reshape(-1, 1, 1, 1), xb.flip(3), xb)
            loss = torch.nn.functional.cross_entropy(net(xb) + mask, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = float((restricted_argmax(logits_of(net, xv), classes) == yv).mean())
        out.append((epoch, acc, copy.deepcopy(net.state_dict())))
    return out


def run_seed(path):
    import torch

    from edgetool.toolchain.train import fit as training
    from edgetool.toolchain.train.checkpoints import float_from_state, load_checkpoint
    from edgetool.toolchain.train.controls import control_file
    from edgetool.toolchain.train.run import Run

    run = Run.open(path, progress=False)
    flat = float_from_state(load_checkpoint(control_file(run, "budget")))
    xv = training.to_tensor(run.data.val, run.mean, run.std)
    yv, yte, ytr = np.asarray(run.data.val.labels), run.yte.numpy(), run.ytr.numpy()
    sup_of = np.asarray(run.data.sup_of)
    members = [np.nonzero(sup_of == k)[0] for k in range(run.hier.n_super)]
    chosen, specialists = [], []
    for k, classes in enumerate(members):
        on_k, on_kv = np.isin(ytr, classes), np.isin(yv, classes)
        tries = []
        for lr in LRS:
            for epoch, acc, state in fine_tune(
                flat, run.xtr[on_k], run.ytr[on_k], classes, xv[on_kv], yv[on_kv], lr, k
            ):
                tries.append((acc, -epoch, lr, epoch, state))
        acc, _, lr, epoch, state = max(tries, key=lambda t: t[:2])  # ties: fewer epochs (the flat network first)
        net = copy.deepcopy(flat)
        net.load_state_dict(state)
        specialists.append(logits_of(net, run.xte))
        chosen.append({"superclass": run.hier.superclasses[k], "lr": lr if epoch else None, "epochs": epoch,
                       "validation_accuracy": acc, "flat_validation_accuracy": tries[0][0]})  # fmt: skip
    flat_logits = logits_of(flat, run.xte)
    p = torch.softmax(torch.from_numpy(flat_logits), 1).numpy()
    route = np.stack([p[:, c].sum(1) for c in members], 1).argmax(1)
    true_k = sup_of[yte]
    routed = np.array([restricted_argmax(specialists[k][i : i + 1], members[k])[0] for i, k in enumerate(route)])
    told = np.array([restricted_argmax(specialists[k][i : i + 1], members[k])[0] for i, k in enumerate(true_k)])
    flat_told = np.array([restricted_argmax(flat_logits[i : i + 1], members[k])[0] for i, k in enumerate(true_k)])
    flat_routed = np.array([restricted_argmax(flat_logits[i : i + 1], members[k])[0] for i, k in enumerate(route)])
    correct = {
        "flat": flat_logits.argmax(1) == yte,
        "flat_routed": flat_routed == yte,
        "specialists": routed == yte,
        "flat_told_superclass": flat_told == yte,
        "specialists_told_superclass": told == yte,
    }
    return {
        "seed": run.cfg.seed,
        "chosen": chosen,
        "correct": correct,
        "routing_accuracy": float((route == true_k).mean()),
    }


def main():
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.evaluate.verdict import paired_interval

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="sample")
    ap.add_argument("--work", required=True, help="fair_verdict.py's work folder (seed0, seed1, ...)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    t0 = time.perf_counter()
    seeds = [run_seed(os.path.join(args.work, "seed{}".format(s))) for s in args.seeds]
    rows = list(seeds[0]["correct"])
    acc = {r: [float(s["correct"][r].mean()) for s in seeds] for r in rows}
    diff, lo, hi = paired_interval([s["correct"]["specialists"] for s in seeds], [s["correct"]["flat"] for s in seeds])
    result = {
        "benchmark": "flat_specialists",
        "dataset": args.dataset,
        "machine": machine_name(),
        "seeds": args.seeds,
        "recipe": {
            "learning_rates": list(LRS),
            "max_epochs": EPOCHS,
            "chosen_on": "each superclass's validation images",
        },
        "accuracy": {r: {"per_seed": v, "mean": float(np.mean(v))} for r, v in acc.items()},
        "specialists_minus_flat": {"points": 100 * diff, "ci95": [100 * lo, 100 * hi], "pays_off": lo > 0},
        "routing_accuracy": [s["routing_accuracy"] for s in seeds],
        "chosen": {str(s["seed"]): s["chosen"] for s in seeds},
        "seconds": time.perf_counter() - t0,
    }
    write_result(os.path.join(RESULTS, "fair", args.dataset, "specialists.json"), result)
    for r in rows:
        print("{:<28} {:.2%}".format(r, np.mean(acc[r])))
    print("specialists - flat = {:+.2f} points (95% CI [{:+.2f}, {:+.2f}])".format(100 * diff, 100 * lo, 100 * hi))


if __name__ == "__main__":
    main()
