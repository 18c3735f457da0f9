#!/usr/bin/env python
"""A pretrained edge backbone on real photos: EfficientNet-Lite0 from its ImageNet weights on
Caltech-101 (or, with ``--dataset cifar10``, CIFAR-10 upscaled to 128 px: see
``common/pretrained.py``), the tail fine-tuned on a CPU, int8 through the runtime, over seeds.

For each seed: ``edgetool train`` (the course split without BACKGROUND_Google: 101 classes,
5,784 training and 2,893 test images; 15% of the training images held out for validation; the
trunk up to blocks.14 frozen and cached with mirrored copies; the tail trained for --epochs,
the epoch kept on validation; then the whole network int8: calibration and --qat-epochs of the
tail), ``edgetool export`` (a flat bundle), and ``edgetool classify BUNDLE TEST --eval`` (int8
through ONNX Runtime: what the device computes).  fp32 is the float network on the same test
images (the run's metrics.json).  Training time is the run's own wall clock per stage (trunk
passes included); seeds share the trunk cache, so only the first seed of a fresh cache pays for
it, and the summary names which seed did.

Writes benchmarks/results/pretrained/<dataset>-<size>/seed<N>.json, summary.json and summary.md.

Usage:
  python benchmarks/pretrained_backbone.py --seeds 0 1 2            # 224 px
  python benchmarks/pretrained_backbone.py --size 160 --seeds 0 1 2
  python benchmarks/pretrained_backbone.py --dataset cifar10 --seeds 0 1 2
  python benchmarks/pretrained_backbone.py --aggregate
"""

import argparse
import json
import os
import resource
import time


from common import RESULTS, machine, mean_se, write_result  # noqa: E402
import common.pretrained as P  # noqa: E402
from common.pretrained import ARCH, cli  # noqa: E402


def folder(size: int) -> str:
    return os.path.join(RESULTS, "pretrained", "{}-{}".format(P.DS.name, size))


def run_seed(seed: int, size: int, epochs: int, qat_epochs: int, cache: str) -> dict:
    data = P.DS.data_dir()
    run = os.path.join(P.WORK, "s{}-seed{}".format(size, seed))
    load = os.getloadavg()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cli(
        "train", run, "--data", data, "--arch", ARCH, "--pretrained", "imagenet", "--image-size", size,
        "--val-fraction", 0.15, "--augment", "flip", "--epochs", epochs, "--qat-epochs", qat_epochs,
        "--seed", seed, "--cache", os.path.join(P.WORK, cache),
    )  # fmt: skip
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    bundle = os.path.join(P.WORK, "bundle-s{}-seed{}".format(size, seed))
    cli("export", run, "--out", bundle, "--force")
    ev = json.loads(cli("classify", bundle, os.path.join(data, "test"), "--eval", "--json", capture=True))
    stages = metrics.get("timing", {})
    result = {
        "arch": ARCH,
        "image_size": size,
        "seed": seed,
        "machine": machine(),
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "fp32": metrics["fp32"],
        "int8_runtime": {"test": ev["accuracy"], "images": ev.get("images"), "backend": "onnxruntime"},
        "int8_minus_fp32_points": 100.0 * (ev["accuracy"] - metrics["fp32"]["test"]),
        "history": metrics["history"],
        "qat": metrics.get("qat"),
        "train_seconds": {
            "stages": stages,  # tail: trunk passes (uncached ones) and the tail's epochs; int8: calibration and QAT
            "trunk_passes": metrics.get("cache_seconds"),
            "test_pass": metrics.get("test_pass_seconds"),  # inside "tail": the test photos' trunk pass (evaluation)
            "total": sum(stages.values()),
            "this_invocation_wall": wall,  # 0-ish when the run had finished before
            "this_invocation_cpu": cpu,  # user + system seconds of the train command, both cores together
        },
        "bundle_bytes": sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(bundle) for f in fs),
    }
    write_result(os.path.join(folder(size), "seed{}.json".format(seed)), result)
    return result


def aggregate(size: int) -> dict:
    d = folder(size)
    files = [f for f in os.listdir(d) if f.startswith("seed") and f.endswith(".json")]
    seeds = sorted((json.load(open(os.path.join(d, f))) for f in files), key=lambda r: r["seed"])
    pct = lambda v: None if v is None else 100.0 * v  # noqa: E731
    fresh = [r for r in seeds if (r["train_seconds"]["trunk_passes"] or 0) > 0]
    scratch = os.path.join(RESULTS, "fair", "caltech101", "summary.json")
    beside = None
    if P.DS.name == "caltech101" and os.path.isfile(scratch):
        with open(scratch) as f:
            s = json.load(f)
        beside = {
            "source": "benchmarks/results/fair/caltech101/summary.json "
            "(64 px, from scratch, 102 classes with BACKGROUND_Google)",
            "accuracy": {k: s["accuracy"][k] for k in ("efficient", "flat_budget", "flat_wide")},
        }
    summary = {
        "arch": ARCH,
        "image_size": size,
        "data": P.DS.data,
        "machine": seeds[0]["machine"] if seeds else None,
        "seeds": [r["seed"] for r in seeds],
        "fp32_test": mean_se(pct(r["fp32"]["test"]) for r in seeds),
        "int8_test": mean_se(pct(r["int8_runtime"]["test"]) for r in seeds),
        "int8_minus_fp32_points": mean_se(r["int8_minus_fp32_points"] for r in seeds),
        "per_seed": [
            {
                "seed": r["seed"],
                "fp32": pct(r["fp32"]["test"]),
                "int8": pct(r["int8_runtime"]["test"]),
                "train_seconds": r["train_seconds"]["total"],
                "trunk_pass_seconds": r["train_seconds"]["trunk_passes"],
                "load_average_at_start": r["load_average_at_start"],
            }
            for r in seeds
        ],
        "fresh_run_train_seconds": [r["train_seconds"]["total"] for r in fresh],
        # the same without the test photos' trunk pass (an evaluation inside the run), where recorded
        "fresh_run_train_seconds_without_test_pass": [
            r["train_seconds"]["total"] - r["train_seconds"]["test_pass"]
            for r in fresh
            if r["train_seconds"].get("test_pass") is not None
        ],
        "bundle_bytes": seeds[0]["bundle_bytes"] if seeds else None,
        "from_scratch": beside,
        # the flat controls given the Super-Sub pipeline's training (equal budget; and at a larger
        # input), trained and measured by pretrained_verdict.py at this dataset's size
        "flat_controls": P.flat_controls()
        if size == P.DS.size
        else {"missing": "pretrained_verdict.py trains its controls at {} px".format(P.DS.size)},
        "note": "± is the standard error over seeds; train seconds are the run's wall clock per stage",
    }
    write_result(os.path.join(d, "summary.json"), summary)
    lines = [
        "# EfficientNet-Lite0 (ImageNet weights) on {}, {} px".format(P.DS.title, size),
        "",
        "Machine: {}. Seeds: {}.".format(summary["machine"], ", ".join(map(str, summary["seeds"]))),
        "",
        "| seed | fp32 | int8 (runtime) | train s | trunk passes s | load avg at start |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary["per_seed"]:
        lines.append(
            "| {} | {:.2f}% | {:.2f}% | {:.0f} | {:.0f} | {} |".format(
                r["seed"], r["fp32"], r["int8"], r["train_seconds"], r["trunk_pass_seconds"] or 0,
                ", ".join("{:.1f}".format(x) for x in r["load_average_at_start"]),
            )
        )  # fmt: skip
    f, q, g = summary["fp32_test"], summary["int8_test"], summary["int8_minus_fp32_points"]
    se = lambda m: "" if m["se"] is None else " ± {:.2f}".format(m["se"])  # noqa: E731
    lines += [
        "",
        "Mean: fp32 {:.2f}%{}, int8 {:.2f}%{}, int8 − fp32 {:+.2f}{} points (± standard error over seeds).".format(
            f["mean"], se(f), q["mean"], se(q), g["mean"], se(g)
        ),
    ]
    c = summary["flat_controls"]
    if "missing" in c:
        lines += ["", "Flat controls at equal training budget: not measured ({}).".format(c["missing"])]
    else:
        lines += ["", "Flat controls, trained for the Super-Sub pipeline's tail passes (seeds {}; {}):".format(
            ", ".join(map(str, c["seeds"])), c["source"])]  # fmt: skip
        for k in ("flat_budget", "flat_cost"):
            t = c["test_percent"][k]
            lines.append("- {}, {:.2f}x MACs: {:.2f}%{}.".format(
                c["training"][k], c["macs_per_image_relative"][k], t["mean"], se(t)))  # fmt: skip
    with open(os.path.join(d, "summary.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--size", type=int, help="input size in px (default: the dataset's, 224 for Caltech-101)")
    P.add_dataset_option(ap)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--cache", default="cache", help="trunk cache folder in the work folder (new name: fresh run)")
    ap.add_argument("--aggregate", action="store_true", help="only the summary, from the seed files")
    a = ap.parse_args()
    ds = P.use(a.dataset)
    a.size = a.size or ds.size
    if not a.aggregate:
        for seed in a.seeds:
            run_seed(seed, a.size, a.epochs, a.qat_epochs, a.cache)
    aggregate(a.size)


if __name__ == "__main__":
    main()
