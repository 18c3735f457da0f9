#!/usr/bin/env python
"""The paper's experiments on real data, as edgetool runs them, over several seeds.

For one dataset and each seed: trains the flat network (lower bound), the superclass (base)
network from the flat trunk, vanilla fp32 subclass fine-tunes, the QAT base, and QAT
subclass fine-tunes at every delta budget of the sweep (sharing the other networks); exports
a bundle per budget and measures the efficient int8 Super-Sub through the runtime (ONNX
Runtime). Every figure uses the definitions of ``edgetool.toolchain.evaluate.bounds`` (docs/training.md, "How
results are measured").

Writes to benchmarks/results/<dataset>/:
  seeds/seed<N>.json   one seed: every budget's measurements (written as each finishes)
  summary.json         per seed and mean +- standard error; the Pareto curve over the budget
  pareto.png           accuracy against x, with the bounds
  report.*             the full evaluation report of seed 0 at the default budget

Usage:
  python benchmarks/paper_experiments.py --dataset fashion-mnist --seeds 0 1 2
  python benchmarks/paper_experiments.py --dataset cifar10 --seeds 0 1 2
  python benchmarks/paper_experiments.py --dataset cifar10 --aggregate   # summary from the seed files

Data comes from ../shared/datasets (see its READMEs). Training runs go to --work (default
edgetool-out/bench-<dataset>) and resume where they stopped.
"""

import argparse
import copy
import json
import os
import shutil
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "datasets")

from common import mean_se, write_result  # noqa: E402
from common.data import dataset_dir  # noqa: E402

SWEEP = ["0", "0.05", "0.2", "patch", "0.1", "0.4"]  # delta budgets, in the order they are run
SHARED_STAGES = ("flat.pt", "super.pt", "super_qat.pt", "timing.json")


def run_point(args, seed, b, first, out):
    """Train (or resume) seed *seed* at delta budget *b* and record its measurements; every budget
    shares the networks of budget *first* but the QAT subclass networks."""
    from edgetool.toolchain.evaluate import bounds as B
    from edgetool.toolchain.train.device import describe as describe_device
    from edgetool.toolchain.evaluate.report import evaluate
    from edgetool.toolchain.train.run import Run, TrainConfig

    work = args.work or os.path.join("edgetool-out", "bench-" + args.dataset)
    data, hier = dataset_dir(args.dataset, work, args.data_root)
    cfg = TrainConfig(
        data=data,
        hierarchy=hier,
        arch=args.arch,
        epochs=args.epochs,
        batch=args.batch,
        seed=seed,
        limit_train=args.train_per_class * 10,
        pad=4 if args.dataset == "cifar10" else 0,
        # explicit, as measured: flip suits CIFAR photos and mirror-symmetric clothing ("auto" would
        # not flip an IDX folder or an ImageFolder tree, since a mirror changes digits and text)
        augment="flip",
    )
    seed_file = os.path.join(out, "seeds", "seed{}.json".format(seed))
    record = {"seed": seed, "budgets": {}}
    if os.path.isfile(seed_file):
        with open(seed_file) as f:
            record = json.load(f)
    if b in record["budgets"]:
        return
    shared = os.path.join(work, "seed{}".format(seed), "budget-{}".format(first))
    path = os.path.join(work, "seed{}".format(seed), "budget-{}".format(b))
    if b != first and not os.path.isfile(os.path.join(path, "flat.pt")):
        Run.open(shared, copy.deepcopy(cfg), progress=args.progress).train_all(with_qat_subclasses=False)
        os.makedirs(path, exist_ok=True)
        for name in SHARED_STAGES:
            if os.path.isfile(os.path.join(shared, name)):
                shutil.copy(os.path.join(shared, name), os.path.join(path, name))
        shutil.copytree(os.path.join(shared, "vanilla"), os.path.join(path, "vanilla"), dirs_exist_ok=True)
    c = copy.deepcopy(cfg)
    c.delta_budget = b
    t0 = time.perf_counter()
    run = Run.open(path, c, progress=args.progress)
    run.train_all()
    bundle = os.path.join(path, "bundle")
    manifest = run.export(bundle)
    if b == args.report_budget and seed == args.report_seed:
        rep = evaluate(run, bundle, out)
        m = {
            k: rep[k]
            for k in ("accuracy", "routing", "gap_closed", "x", "efficient_measured_with", "base_init", "delta_budget")
        }
    else:
        m = B.summary(B.measure(run, bundle, manifest))
    m["seconds"] = time.perf_counter() - t0
    m["train_seconds"] = run.train_seconds()
    m["train_images"], m["test_images"] = int(len(run.ytr)), int(len(run.yte))
    m["trained_on"] = describe_device()
    m["superclasses"] = run.hier.superclasses
    m["changed_codes"] = [d["changed_int8"] / manifest["base"]["int8_weight_bytes"] for d in manifest["deltas"]]
    record["budgets"][b] = m
    record["config"] = dict(cfg.__dict__, delta_budget=None)
    write_result(seed_file, record)
    a = m["accuracy"]
    print(
        "seed {} budget {}: flat {:.2%} control {:.2%} upper {:.2%} vanilla {:.2%} efficient {:.2%} x {:.3f} "
        "routing base {:.2%} flat {:.2%} ({:.0f} s)".format(
            seed,
            b,
            a["lower"],
            a["control"],
            a["upper"],
            a["vanilla"],
            a["efficient"],
            m["x"]["mean"],
            m["routing"]["base_int8"],
            m["routing"]["flat"],
            m["seconds"],
        ),
        flush=True,
    )


def run_controls(args, seed, kind, out):
    """Train (or resume) flat control *kind* ("budget" or "wide", edgetool.toolchain.evaluate.bounds) with the
    seed's recorded settings and record its int8 test accuracy, image passes and FLOPs in the seed file."""
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.evaluate import bounds as B
    from edgetool.toolchain.train import fit as training
    from edgetool.toolchain.train.device import describe as describe_device
    from edgetool.toolchain.train.run import Run, TrainConfig

    seed_file = os.path.join(out, "seeds", "seed{}.json".format(seed))
    with open(seed_file) as f:
        record = json.load(f)
    controls = record.setdefault("controls", {})
    if "flat_" + kind in controls:
        return
    work = args.work or os.path.join("edgetool-out", "bench-" + args.dataset)
    data, hier = dataset_dir(args.dataset, work, args.data_root)
    cfg_d = dict(record["config"], data=data, hierarchy=hier, delta_budget=TrainConfig().delta_budget)
    if "flip" in cfg_d:  # seed files that predate --augment
        cfg_d["augment"] = "flip" if cfg_d.pop("flip") else "none"
    cfg = TrainConfig(**{k: v for k, v in cfg_d.items() if k in TrainConfig.__dataclass_fields__})
    run = Run.open(os.path.join(work, "seed{}".format(seed), "controls"), cfg, progress=args.progress)
    t0 = time.perf_counter()
    net = run.flat_control(kind)
    acc = float((training.predict_logits(net, run.xte).argmax(1) == run.yte).float().mean())
    cost = B.costs(run)
    controls["flat_" + kind] = {
        "accuracy": acc,
        "image_passes": cost["flat_" + kind]["image_passes"],
        "flops_per_image": cost["flat_" + kind]["flops_per_image"],
        "pipeline_image_passes": cost["pipeline"]["image_passes"],
        "width": cost["pipeline"]["control_width"] if kind == "wide" else 1.0,
        "seconds": time.perf_counter() - t0,
        "trained_on": describe_device(),
        "machine": machine_name(),
    }
    write_result(seed_file, record)
    eff = record["budgets"][TrainConfig().delta_budget]["accuracy"]["efficient"]
    print("seed {} flat {}: {:.2%} (efficient {:.2%})".format(seed, kind, acc, eff), flush=True)


def aggregate(dataset, out, default_budget, machine):
    seeds = []
    folder = os.path.join(out, "seeds")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                seeds.append(json.load(f))
    seeds = [s for s in seeds if default_budget in s["budgets"]]
    if not seeds:
        raise SystemExit("no seed results with the default budget {} in {}".format(default_budget, folder))
    keys = ("lower", "upper", "control", "vanilla", "efficient")
    per_seed = []
    for s in seeds:
        m = s["budgets"][default_budget]
        per_seed.append(
            {
                "seed": s["seed"],
                "accuracy": {k: m["accuracy"][k] for k in keys},
                "routing": m["routing"],
                "x_per_superclass": m["x"]["per_superclass"],
                "x": m["x"]["mean"],
                "gap_closed": m["gap_closed"],
            }
        )
    for p, s in zip(per_seed, seeds):  # the flat controls at equal training budget and cost, where trained
        for k, c in s.get("controls", {}).items():
            p["accuracy"][k] = c["accuracy"]
    controls = [k for k in ("flat_budget", "flat_wide") if all(k in p["accuracy"] for p in per_seed)]
    mean = {
        "accuracy": {k: mean_se([p["accuracy"][k] for p in per_seed]) for k in keys + tuple(controls)},
        "routing": {k: mean_se([p["routing"][k] for p in per_seed]) for k in ("base_fp32", "base_int8", "flat")},
        "x": mean_se([p["x"] for p in per_seed]),
        "x_per_superclass": {
            n: mean_se([p["x_per_superclass"][n] for p in per_seed]) for n in per_seed[0]["x_per_superclass"]
        },
        "gap_closed": {k: mean_se([p["gap_closed"][k]["value"] for p in per_seed]) for k in ("vanilla", "efficient")},
        "efficient_minus_vanilla": mean_se([p["accuracy"]["efficient"] - p["accuracy"]["vanilla"] for p in per_seed]),
        "efficient_minus_lower": mean_se([p["accuracy"]["efficient"] - p["accuracy"]["lower"] for p in per_seed]),
    }
    for k in controls:
        mean["efficient_minus_" + k] = mean_se([p["accuracy"]["efficient"] - p["accuracy"][k] for p in per_seed])
    for k in ("vanilla", "efficient"):
        if mean["gap_closed"][k]["mean"] is None:
            mean["gap_closed"][k]["reason"] = "the bounds tie in every seed"
    budgets = []
    all_budgets = sorted({b for s in seeds for b in s["budgets"]}, key=_budget_order)
    for b in all_budgets:
        rows = [s["budgets"][b] for s in seeds if b in s["budgets"]]
        diffs = [r["accuracy"]["efficient"] - r["accuracy"]["vanilla"] for r in rows]
        budgets.append(
            {
                "budget": b,
                "seeds": len(rows),
                "efficient": mean_se([r["accuracy"]["efficient"] for r in rows]),
                "x": mean_se([r["x"]["mean"] for r in rows]),
                "efficient_minus_vanilla": mean_se(diffs),
                "changed_codes": mean_se([float(np.mean(r["changed_codes"])) for r in rows]),
            }
        )
    # a point counts toward the targets only when every seed has run it
    within = [p for p in budgets if p["seeds"] == len(seeds) and p["efficient_minus_vanilla"]["mean"] >= -0.01]
    smallest = min(within, key=lambda p: p["x"]["mean"]) if within else None
    d = mean["efficient_minus_vanilla"]["mean"]
    targets = {
        "default_within_0.3_points_of_vanilla": {"met": bool(d >= -0.003), "difference": d},
        "default_above_flat": {
            "met": bool(mean["efficient_minus_lower"]["mean"] > 0),
            "difference": mean["efficient_minus_lower"]["mean"],
        },
        "smallest_x_within_1_point_of_vanilla": None
        if smallest is None
        else {
            "budget": smallest["budget"],
            "x": smallest["x"]["mean"],
            "efficient_minus_vanilla": smallest["efficient_minus_vanilla"]["mean"],
        },
        "x_le_0.4_within_1_point": {"met": any(p["x"]["mean"] <= 0.4 for p in within)},
    }
    first = seeds[0]["budgets"][default_budget]
    summary = {
        "benchmark": "paper_experiments",
        "dataset": dataset,
        "machine": machine,
        "trained_on": first.get("trained_on", "cpu"),
        "train_seconds": first.get("train_seconds"),
        "definitions": "docs/training.md 'How results are measured'; x = stored delta / stored base.onnx",
        "default_budget": default_budget,
        "seeds": [s["seed"] for s in seeds],
        "train_images": first["train_images"],
        "test_images": first["test_images"],
        "superclasses": first["superclasses"],
        "config": seeds[0].get("config"),
        "base_init": first["base_init"],
        "per_seed": per_seed,
        "mean": mean,
        "pareto": budgets,
        "targets": targets,
    }
    # Each flat control: how it was trained (the seeds share it), its accuracy and efficient - it (mean
    # and standard error over the seeds, as under mean); null where a seed lacks it (controls_missing).
    shared = ("image_passes", "flops_per_image", "pipeline_image_passes", "width")
    summary["controls"] = {
        k: dict(
            {f: seeds[0]["controls"][k][f] for f in shared},
            accuracy=mean["accuracy"][k],
            efficient_minus_control=mean["efficient_minus_" + k],
        )
        if k in controls
        else None
        for k in ("flat_budget", "flat_wide")
    }
    lacking = {
        str(s["seed"]): sorted({"flat_budget", "flat_wide"} - set(s.get("controls", {})))
        for s in seeds
        if not {"flat_budget", "flat_wide"} <= set(s.get("controls", {}))
    }
    if lacking:
        summary["controls_missing"] = {
            "seeds": [int(k) for k in lacking],
            "lacking": lacking,
            "why": "these flat controls were not trained for these seeds; "
            "`paper_experiments.py --controls` (with the seeds' --arch and data) trains them",
        }
    write_result(os.path.join(out, "summary.json"), summary)
    pareto_plot(summary, os.path.join(out, "pareto.png"))
    return summary


def markdown_table(summary):
    """The tables of docs/results.md for one dataset, from summary.json (mean +- standard error over seeds)."""

    def pm(v, scale=100.0, digits=2):
        if v["mean"] is None:
            return "n/a"
        se = "" if v["se"] is None else " ± {:.{d}f}".format(scale * v["se"], d=digits)
        return "{:.{d}f}{}".format(scale * v["mean"], se, d=digits)

    m = summary["mean"]
    a = m["accuracy"]
    lines = [
        "| {} ({} seeds, {} test images) | accuracy [%] |".format(
            summary["dataset"], len(summary["seeds"]), summary["test_images"]
        ),
        "|---|---:|",
        "| lower bound: flat network | {} |".format(pm(a["lower"])),
        "| control: flat network, true superclass's classes | {} |".format(pm(a["control"])),
        "| upper bound: vanilla subclass networks, true superclass | {} |".format(pm(a["upper"])),
        "| vanilla fp32 Super-Sub | {} |".format(pm(a["vanilla"])),
        "| **efficient int8 Super-Sub** (budget {}, x = {}) | **{}** |".format(
            summary["default_budget"], pm(m["x"], 1.0, 3), pm(a["efficient"])
        ),
        "| efficient − vanilla (paired) | {} |".format(pm(m["efficient_minus_vanilla"])),
        "| efficient − flat (paired) | {} |".format(pm(m["efficient_minus_lower"])),
    ]
    for k, name in (("flat_budget", "equal training budget"), ("flat_wide", "equal inference cost")):
        if k in a:
            lines.append("| flat int8, {} | {} |".format(name, pm(a[k])))
            lines.append(
                "| efficient − flat int8, {} (paired by seed) | {} |".format(name, pm(m["efficient_minus_" + k]))
            )
    lines += [
        "| routing: base network int8 / fp32 / flat network's implied superclass | {} / {} / {} |".format(
            pm(m["routing"]["base_int8"]), pm(m["routing"]["base_fp32"]), pm(m["routing"]["flat"])
        ),
        "",
        "| delta budget | seeds | x | codes changed | efficient [%] | − vanilla [points] |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in summary["pareto"]:
        lines.append(
            "| {} | {} | {} | {} | {} | {} |".format(
                p["budget"],
                p["seeds"],
                pm(p["x"], 1.0, 3),
                pm(p["changed_codes"], 100.0, 0) + "%",
                pm(p["efficient"]),
                pm(p["efficient_minus_vanilla"]),
            )
        )
    return "\n".join(lines)


def _budget_order(b):
    """Dense first, then the proximal thresholds by tau, the delta grids by step, the top shares
    by falling share, the patch last."""
    from edgetool.toolchain.train.delta_budget import parse_budget

    mode, value = parse_budget(b)
    rank = ("dense", "prox", "grid", "topk", "patch").index(mode)
    return (rank, -value if mode == "topk" else value)


def _budget_label(b):
    from edgetool.toolchain.train.delta_budget import parse_budget

    mode, value = parse_budget(b)
    return {"patch": "BN/head patch", "grid": "grid {:g}", "topk": "top {:g}%"}.get(mode, "tau={:g}").format(
        100 * value if mode == "topk" else value
    )


def pareto_plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    families = (
        ("proximal step (tau)", "o-", "#ff7f0e", lambda b: _budget_order(b)[0] in (0, 1)),
        ("delta grid (gridM)", "s-", "#8c564b", lambda b: _budget_order(b)[0] == 2),
        ("top share (%)", "^-", "#e377c2", lambda b: _budget_order(b)[0] == 3),
        ("BN/head patch", "D", "#7f7f7f", lambda b: _budget_order(b)[0] == 4),
    )
    for name, fmt, color, member in families:
        pts = [p for p in summary["pareto"] if member(p["budget"])]
        if not pts:
            continue
        xs = [p["x"]["mean"] for p in pts]
        ys = [100 * p["efficient"]["mean"] for p in pts]
        es = [100 * (p["efficient"]["se"] or 0) for p in pts]
        ax.errorbar(xs, ys, yerr=es, fmt=fmt, color=color, capsize=3, label="efficient int8, " + name)
        for p, x, y in zip(pts, xs, ys):
            label = _budget_label(p["budget"])
            if p["budget"] == summary["default_budget"]:
                label += " (default)"
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    acc = summary["mean"]["accuracy"]
    for key, label, color, ls in (
        ("lower", "lower bound (flat)", "#d62728", "--"),
        ("control", "control (flat, true superclass)", "#9467bd", ":"),
        ("vanilla", "vanilla fp32 Super-Sub", "#1f77b4", "-"),
        ("upper", "upper bound (true superclass)", "#2ca02c", "--"),
    ):
        ax.axhline(100 * acc[key]["mean"], color=color, ls=ls, lw=1, label=label)
    ax.axhspan(
        100 * acc["vanilla"]["mean"] - 1,
        100 * acc["vanilla"]["mean"],
        color="#1f77b4",
        alpha=0.08,
        label="within 1 point of vanilla",
    )
    ax.axvline(0.2, color="gray", ls="-.", lw=1, label="x = 0.2 (paper)")
    ax.set_xlabel("x = stored delta / stored int8 network (bundle = 1 + xN networks)")
    ax.set_ylabel("accuracy [%]")
    ax.set_title(
        "Delta budget: {} ({} seeds, {} test images)".format(
            summary["dataset"], len(summary["seeds"]), summary["test_images"]
        )
    )
    ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=["fashion-mnist", "cifar10"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sweep", nargs="+", default=SWEEP, help="delta budgets (every seed runs each, in this order)")
    ap.add_argument("--default", default=None, help="the budget the headline figures use (default: TrainConfig's)")
    ap.add_argument("--train-per-class", type=int, default=1000)
    ap.add_argument("--arch", default="resnet8")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--data-root", default=SHARED, help="folder holding fashion-mnist/ and cifar10-jpg/")
    ap.add_argument("--report-seed", type=int, default=0)
    ap.add_argument("--report-budget", default=None, help="budget of the full report (default: --default)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None, help="results folder (default: benchmarks/results/<dataset>)")
    ap.add_argument("--aggregate", action="store_true", help="only rebuild summary.json and pareto.png")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print the tables of docs/results.md from summary.json")
    ap.add_argument(
        "--controls",
        action="store_true",
        help="train the flat controls (equal training budget, then equal inference cost) for the seeds' "
        "recorded settings and add them to the seed files",
    )
    args = ap.parse_args()

    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.train.run import TrainConfig

    default = args.default or TrainConfig().delta_budget
    args.report_budget = args.report_budget or default
    out = args.out or os.path.join(HERE, "results", args.dataset)
    os.makedirs(os.path.join(out, "seeds"), exist_ok=True)
    if args.controls:
        for kind in ("budget", "wide"):
            for seed in args.seeds:
                run_controls(args, seed, kind, out)
    elif not args.aggregate:
        for b in args.sweep:  # every seed at one budget before the next budget
            for seed in args.seeds:
                run_point(args, seed, b, args.sweep[0], out)
    machine = machine_name()
    if args.aggregate or args.controls:  # the seeds ran where the committed summary says; controls record theirs
        try:
            with open(os.path.join(out, "summary.json")) as f:
                machine = json.load(f).get("machine", machine)
        except (OSError, ValueError):
            pass
    s = aggregate(args.dataset, out, default, machine)
    if args.markdown:
        print(markdown_table(s))
        return
    print(json.dumps({"mean": s["mean"]["accuracy"], "x": s["mean"]["x"], "targets": s["targets"]}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
