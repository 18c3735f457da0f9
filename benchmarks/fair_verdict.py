#!/usr/bin/env python
"""Does Super-Sub pay off?  Efficient int8 Super-Sub against both flat controls, over seeds.

For one dataset and each seed: trains every network of the run (resumable) with a validation
split carved from the training images, trains the two flat controls of
``edgetool.toolchain.evaluate.bounds`` (equal training budget; equal inference cost), exports the int8
bundle (routing chosen on the validation split), and measures every row once on the full test
split.  Then the verdict pools the seeds: efficient int8 minus the better flat control (chosen
on validation), with a paired bootstrap interval resampled within each seed's test images.

Also recorded per seed: each row's image passes and FLOPs per image, x both ways (stored delta
over base.onnx, and over base.onnx under the same codec), and the bundle's gated top-k routing
against top-1 through the runtime: stage-1 errors recovered (gross), answers it breaks, and net.

Writes benchmarks/results/fair/<dataset>/seed<N>.json (per-image correctness bit-packed as hex)
and benchmarks/results/fair/<dataset>/summary.json and summary.md.

Usage:
  python benchmarks/fair_verdict.py --dataset sample --seeds 0 1 2
  python benchmarks/fair_verdict.py --dataset fashion-mnist --seeds 0 1 2
  python benchmarks/fair_verdict.py --dataset cifar10 --seeds 0 1 2
  python benchmarks/fair_verdict.py --dataset caltech101 --seeds 0 1 2
  python benchmarks/fair_verdict.py --dataset cifar10 --aggregate      # summary from the seed files
  python benchmarks/fair_verdict.py --readme                           # the table of docs/results.md
"""

import argparse
import json
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

from common import RESULTS, write_result  # noqa: E402
from common import mean_se  # noqa: E402

ROWS = ("lower", "control", "upper", "vanilla", "efficient", "flat_budget", "flat_wide")
# The committed multi-seed benchmarks' settings (paper_experiments.py), plus a validation split.
SETTINGS = {
    "sample": dict(val_fraction=0.1),
    "fashion-mnist": dict(limit_train=10000, augment="flip", val_fraction=0.1),
    "cifar10": dict(limit_train=10000, augment="flip", pad=4, val_fraction=0.1),
    # hierarchy_learning.py's Caltech-101 settings (64x64, 101 classes, the course split); no
    # taxonomy, so the hierarchy is the committed learned one (learned-overlap, from seed 0's
    # validation confusion: training images only)
    "caltech101": dict(image_size=64, pad=4, epochs=12, base_epochs=2, ft_epochs=3, val_fraction=0.1),
}
LEARNED = {"caltech101": os.path.join(RESULTS, "hierarchy", "caltech101-learned-overlap.json")}


def config(dataset, seed, work):
    from edgetool.toolchain.train.run import TrainConfig

    data, hier = "sample", None
    if dataset != "sample":
        from common.data import data_source

        data, hier = data_source(dataset, work)
    hier = LEARNED.get(dataset, hier)
    return TrainConfig(data=data, hierarchy=hier, seed=seed, **SETTINGS[dataset])


def pack(ok):
    return np.packbits(np.asarray(ok, dtype=bool)).tobytes().hex()


def unpack(hexs, n):
    return np.unpackbits(np.frombuffer(bytes.fromhex(hexs), dtype=np.uint8))[:n].astype(bool)


def recovery(run, bundle, top1_ok):
    """The bundle's gated top-k routing against top-1 (*top1_ok*: the efficient row's per-image
    correctness, which is the bundle's top-1 routing through ONNX Runtime)."""
    from edgetool.toolchain.evaluate.runtime_eval import evaluate_bundle_predictions

    members = run.hier.members(run.train.classes)
    ks, js = evaluate_bundle_predictions(bundle, run.xte.numpy(), policy="topk")
    topk_ok = np.array([members[k][j] for k, j in zip(ks, js)]) == run.yte.numpy()
    gross = int((~top1_ok & topk_ok).sum())
    broken = int((top1_ok & ~topk_ok).sum())
    return {
        "top1_accuracy": float(top1_ok.mean()),
        "topk_accuracy": float(topk_ok.mean()),
        "top1_errors": int((~top1_ok).sum()),
        "recovered_gross": gross,
        "newly_broken": broken,
        "recovered_net": gross - broken,
    }


def run_seed(dataset, seed, work, out, progress):
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.evaluate import bounds
    from edgetool.toolchain.train.run import Run

    path = os.path.join(work, "seed{}".format(seed))
    t0 = time.perf_counter()
    run = Run.open(path, config(dataset, seed, work), progress=progress)
    run.train_all()
    for kind in ("budget", "wide"):
        run.flat_control(kind)
    bundle = os.path.join(path, "bundle")
    manifest = run.export(bundle, force=True)
    m = bounds.measure(run, bundle, manifest)
    record = {
        "dataset": dataset,
        "seed": seed,
        "machine": machine_name(),
        "config": dict(run.cfg.__dict__),
        "train_images": int(len(run.ytr)),
        "validation_images": int(len(run.data.val.labels)) if run.data.val is not None else 0,
        "test_images": int(len(run.yte)),
        "accuracy": m["accuracy"],
        "correct": {k: pack(m["correct"][k]) for k in ROWS},
        "cost": m["cost"],
        "verdict": m["verdict"],
        "routing": m["routing"],
        "routing_chosen_on": (manifest.get("routing") or {}).get("chosen_on"),
        "x": m["x"],
        "recovery": recovery(run, bundle, m["correct"]["efficient"]),
        "train_seconds": run.train_seconds(),
        "seconds": time.perf_counter() - t0,
    }
    write_result(os.path.join(out, "seed{}.json".format(seed)), record)
    a = m["accuracy"]
    print(
        "seed {}: ".format(seed)
        + " ".join("{} {:.2%}".format(k, a[k]) for k in ROWS)
        + " | "
        + m["verdict"]["message"],
        flush=True,
    )


def aggregate(dataset, out):
    from edgetool.toolchain.evaluate import verdict

    seeds = []
    for name in sorted(os.listdir(out)):
        if name.startswith("seed") and name.endswith(".json"):
            with open(os.path.join(out, name)) as f:
                seeds.append(json.load(f))
    if not seeds:
        raise SystemExit("no seed results in {}".format(out))
    correct = {k: [unpack(s["correct"][k], s["test_images"]) for s in seeds] for k in ROWS}
    # the better control: by validation where every seed has one (the mean of their choices' scores)
    val = {}
    if all(s["verdict"]["validation"] for s in seeds):
        for k in verdict.CONTROLS:
            val[k] = float(np.mean([s["verdict"]["validation"][k] for s in seeds]))
    pooled = verdict.decide(correct["efficient"], {k: correct[k] for k in verdict.CONTROLS}, val or None, "RUN")
    rec = [s["recovery"] for s in seeds]
    summary = {
        "benchmark": "fair_verdict",
        "dataset": dataset,
        "machine": sorted({s["machine"] for s in seeds}),
        "seeds": [s["seed"] for s in seeds],
        "config": dict(seeds[0]["config"], seed=None),
        "train_images": seeds[0]["train_images"],
        "validation_images": seeds[0]["validation_images"],
        "test_images": seeds[0]["test_images"],
        "accuracy": {k: mean_se([s["accuracy"][k] for s in seeds]) for k in ROWS},
        "per_seed": [
            {
                "seed": s["seed"],
                "accuracy": s["accuracy"],
                "verdict": {k: s["verdict"][k] for k in ("best_control", "difference", "ci95", "validation")},
                "x": s["x"]["mean"],
                "x_same_codec": s["x"]["same_codec"]["mean"],
                "recovery": s["recovery"],
                "routing_chosen_on": s["routing_chosen_on"],
                "train_seconds": sum(s["train_seconds"].values()),
            }
            for s in seeds
        ],
        "cost": seeds[0]["cost"],
        "x": {"over_base_onnx": mean_se([s["x"]["mean"] for s in seeds])},
        "x_same_codec": mean_se([s["x"]["same_codec"]["mean"] for s in seeds]),
        "recovery": {k: int(sum(r[k] for r in rec)) for k in ("top1_errors", "recovered_gross", "newly_broken")},
        "verdict": pooled,
    }
    summary["recovery"]["recovered_net"] = summary["recovery"]["recovered_gross"] - summary["recovery"]["newly_broken"]
    write_result(os.path.join(out, "summary.json"), summary)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(markdown(summary))
    print(pooled["message"])


def markdown(s):
    names = {
        "lower": "flat fp32, {} epochs (lower bound)".format(s["config"]["epochs"]),
        "control": "flat fp32, told the true superclass",
        "upper": "vanilla subclass networks, told the true superclass",
        "vanilla": "vanilla fp32 Super-Sub",
        "efficient": "**efficient int8 Super-Sub**",
        "flat_budget": "flat int8, equal training budget",
        "flat_wide": "flat int8, equal inference cost",
    }
    n = s["train_images"]
    lines = [
        "# Does Super-Sub pay off? {} ({} seeds: {})".format(s["dataset"], len(s["seeds"]), s["seeds"]),
        "",
        "Machine: {}. {} training images ({} more held out for validation), {} test images per seed.".format(
            "; ".join(s["machine"]), n, s["validation_images"], s["test_images"]
        ),
        "",
        "| row | accuracy (mean ± se) | epochs (image passes / training images) | MFLOPs per image |",
        "|---|---:|---:|---:|",
    ]
    for k in ROWS:
        a, c = s["accuracy"][k], s["cost"][k]
        se = "" if a["se"] is None else " ± {:.2f}".format(100 * a["se"])
        lines.append(
            "| {} | {:.2f}{} | {:.1f} | {:.1f} |".format(
                names[k], 100 * a["mean"], se, c["image_passes"] / n, c["flops_per_image"] / 1e6
            )
        )
    v, r = s["verdict"], s["recovery"]
    lines += [
        "",
        "**Verdict (pooled over seeds):** {}. Better control chosen on the {}.".format(v["message"], v["chosen_on"]),
        "",
        "x = stored delta / base.onnx: {:.3f}; with base.onnx under the same codec: {:.3f}.".format(
            s["x"]["over_base_onnx"]["mean"], s["x_same_codec"]["mean"]
        ),
        "",
        "Gated top-k routing against top-1 (bundle, ONNX Runtime, all seeds): {} top-1 errors, {} recovered "
        "(gross), {} newly broken, {} net.".format(
            r["top1_errors"], r["recovered_gross"], r["newly_broken"], r["recovered_net"]
        ),
        "",
    ]
    return "\n".join(lines)


def readme_table(root=os.path.join(RESULTS, "fair")):
    """The table of docs/results.md: one row per dataset with a summary, from the committed summaries."""
    lines = [
        "| data (seeds, test images each) | efficient int8 | flat, equal budget | flat, equal cost "
        "| efficient − better control (95% CI) | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "summary.json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            s = json.load(f)
        a, v = s["accuracy"], s["verdict"]

        def cell(k):
            se = a[k]["se"]
            return "{:.2f}".format(100 * a[k]["mean"]) + ("" if se is None else " ± {:.2f}".format(100 * se))

        lines.append(
            "| [{}]({}) ({}, {:,}) | {} | {} | {} | {:+.2f} ({:+.2f}, {:+.2f}) vs {} | {} |".format(
                name,
                "../benchmarks/results/fair/{}/summary.md".format(name),
                len(s["seeds"]),
                s["test_images"],
                cell("efficient"),
                cell("flat_budget"),
                cell("flat_wide"),
                100 * v["difference"],
                100 * v["ci95"][0],
                100 * v["ci95"][1],
                v["best_control"],
                "pays off" if v["pays_off"] else "ship flat",
            )
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(SETTINGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", default=None, help="training runs (default edgetool-out/fair-<dataset>)")
    ap.add_argument("--out", default=None, help="results (default benchmarks/results/fair/<dataset>)")
    ap.add_argument("--aggregate", action="store_true", help="only write the summary from the seed files")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--readme", action="store_true", help="print the table of docs/results.md")
    args = ap.parse_args()
    if args.readme:
        print(readme_table())
        return
    if args.dataset is None:
        ap.error("--dataset is required")
    work = args.work or os.path.join("edgetool-out", "fair-" + args.dataset)
    out = args.out or os.path.join(RESULTS, "fair", args.dataset)
    if not args.aggregate:
        for seed in args.seeds:
            run_seed(args.dataset, seed, work, out, args.progress)
    aggregate(args.dataset, out)


if __name__ == "__main__":
    main()
