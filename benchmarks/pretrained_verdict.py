#!/usr/bin/env python
"""Does Super-Sub pay off on a pretrained backbone?  Tail specialists against two flat controls.

EfficientNet-Lite0 (ImageNet weights) on Caltech-101 (the course split without BACKGROUND_Google,
15% of the training images held out for validation), or with ``--dataset cifar10`` on CIFAR-10
upscaled to 128 px (10 classes, 4 superclasses, the cost control at 144 px; ``common/pretrained.py``).
Per seed (Caltech-101's sizes):

- efficient: the bundle of ``benchmarks/tail_specialists.py`` (the base at 224 px, its tail
  trained 10 epochs + 2 of int8 QAT, then 10 superclasses of tail specialists, each fine-tuned
  for 10 epochs over its superclass's images and shipped only where it beats the base on held-out
  validation photos).  Its training: about 22 epochs of tail passes over the training images.
- flat_budget: the same flat network with its tail trained for 20 epochs + 2 of QAT: the
  pipeline's tail passes (equal training budget), one network's inference cost.
- flat_cost: the same, with 240 px inputs: 1.20x the multiply-accumulates of one 224 px network,
  above the two-stage cost (1.13x for a photo a specialist reruns); equal training budget too.

Every network is int8 and measured through the runtime (ONNX Runtime) on the test photos, read
once per bundle.  The better control is chosen on validation (int8 accuracy of the kept epoch);
the verdict is efficient minus that control, a paired bootstrap over the test photos pooled over
seeds (resampled within each), and the issue's target: at least +1.0 point with the interval
above 0.

Writes benchmarks/results/pretrained/verdict-224/ (verdict-cifar10-128/) seed<N>.json, summary.json
and summary.md.

Usage:
  python benchmarks/tail_specialists.py --seeds 0 1 2      # first: the efficient bundles
  python benchmarks/pretrained_verdict.py --seeds 0 1 2 [--cache cache-fresh]
  python benchmarks/pretrained_verdict.py --aggregate
"""

import argparse
import json
import os
import time

import numpy as np

from common import RESULTS, machine, mean_se, write_result  # noqa: E402
import common.pretrained as P  # noqa: E402
from common.pretrained import ARCH, cli, correct, macs  # noqa: E402

from edgetool.toolchain.evaluate.verdict import paired_interval  # noqa: E402

CONTROLS = ("flat_budget", "flat_cost")  # input sizes: the dataset's, and its cost_size; 2x the base's epochs


def folders():
    """(this dataset's verdict folder, its specialists' folder)."""
    return tuple(os.path.join(RESULTS, "pretrained", n) for n in (P.DS.verdict, P.DS.specialists))


def control_size(name: str) -> int:
    return P.DS.size if name == "flat_budget" else P.DS.cost_size


BASE_EPOCHS, QAT_EPOCHS, TARGET_POINTS = 10, 2, 1.0


def test_photos(seed: int):
    from edgetool.toolchain.train.trunk_cache import list_data

    _, test, classes = list_data(P.DS.data_dir(), 0, 0, seed)
    return test.paths, [classes[i] for i in test.labels]


def int8_validation(run: str) -> float:
    """The int8 network's validation accuracy at the epoch QAT kept."""
    with open(os.path.join(run, "metrics.json")) as f:
        q = json.load(f)["qat"]
    return float(q["val_accuracy"][q["kept_epoch"] - 1])


def control(seed: int, size: int, epochs: int, cache: str) -> dict:
    run = os.path.join(P.WORK, "s{}-seed{}-e{}".format(size, seed, epochs))
    t0 = time.perf_counter()
    cli(
        "train", run, "--data", P.DS.data_dir(), "--arch", ARCH, "--pretrained", "imagenet",
        "--image-size", size, "--val-fraction", 0.15, "--augment", "flip", "--epochs", epochs,
        "--qat-epochs", QAT_EPOCHS, "--seed", seed, "--cache", os.path.join(P.WORK, cache),
    )  # fmt: skip
    wall = time.perf_counter() - t0
    bundle = os.path.join(P.WORK, "bundle-s{}-seed{}-e{}".format(size, seed, epochs))
    if not os.path.isfile(os.path.join(bundle, "manifest.json")):
        cli("export", run, "--out", bundle, "--force")
    with open(os.path.join(run, "metrics.json")) as f:
        m = json.load(f)
    return {
        "run": os.path.relpath(run, P.WORK),
        "bundle": bundle,
        "image_size": size,
        "tail_epochs": epochs,
        "qat_epochs": QAT_EPOCHS,
        "validation_int8": int8_validation(run),
        "fp32_test": m["fp32"]["test"],
        "train_seconds": sum(m.get("timing", {}).values()),
        "this_invocation_wall": wall,
    }


def run_seed(seed: int, cache: str) -> dict:
    out, specialists = folders()
    spec_file = os.path.join(specialists, "seed{}.json".format(seed))
    if not os.path.isfile(spec_file):
        raise SystemExit("no {}: run benchmarks/tail_specialists.py --seeds {} first".format(spec_file, seed))
    with open(spec_file) as f:
        spec = json.load(f)
    paths, labels = test_photos(seed)
    rows = {
        "base": {"bundle": os.path.join(P.WORK, "bundle-s{}-seed{}".format(P.DS.size, seed))},
        "efficient": {
            "bundle": os.path.join(
                P.WORK, spec.get("bundle", "bundle-s{}-seed{}-spec{}".format(P.DS.size, seed, spec["superclasses"]))
            )
        },
    }
    rows["base"]["validation_int8"] = int8_validation(os.path.join(P.WORK, "s{}-seed{}".format(P.DS.size, seed)))
    rows["efficient"]["shipped"] = spec["shipped"]
    for name in CONTROLS:
        rows[name] = control(seed, control_size(name), 2 * BASE_EPOCHS, cache)
    correct_bits = {}
    for name, row in rows.items():
        ok, _ = correct(row["bundle"], paths, labels)
        row["test"] = float(ok.mean())
        row["bundle"] = os.path.relpath(row["bundle"], P.WORK)
        correct_bits[name] = ok
    result = {
        "seed": seed,
        "machine": machine(),
        "test_images": len(paths),
        "rows": rows,
        # per test photo, right (1) or wrong (0), in the order of the sorted test folder
        "correct": {k: "".join("1" if b else "0" for b in v) for k, v in correct_bits.items()},
    }
    write_result(os.path.join(out, "seed{}.json".format(seed)), result)
    return result


def aggregate() -> dict:
    out, specialists = folders()
    files = sorted(f for f in os.listdir(out) if f.startswith("seed") and f.endswith(".json"))
    seeds = [json.load(open(os.path.join(out, f))) for f in files]
    bits = lambda r, k: np.array([c == "1" for c in r["correct"][k]], float)  # noqa: E731
    names = ["base", "efficient"] + list(CONTROLS)
    val = {k: float(np.mean([r["rows"][k]["validation_int8"] for r in seeds])) for k in CONTROLS}
    best = max(sorted(CONTROLS), key=lambda k: val[k])
    diffs = {}
    for k in ["base"] + list(CONTROLS):
        d, lo, hi = paired_interval([bits(r, "efficient") for r in seeds], [bits(r, k) for r in seeds])
        diffs[k] = {"points": 100 * d, "ci95": [100 * lo, 100 * hi]}
    net, size, wide = macs(P.DS.size), P.DS.size, P.DS.cost_size
    rerun = []  # the share of test photos a shipped specialist reran (its tail), per seed
    for r in seeds:
        with open(os.path.join(specialists, "seed{}.json".format(r["seed"]))) as f:
            t = json.load(f)["test"]
        rerun.append(t["images_rerouted_to_a_specialist"] / r["test_images"])
    cost = {
        "base": 1.0,
        "efficient": 1.0 + (net["two_stage_ratio"] - 1.0) * float(np.mean(rerun)),  # as measured on test
        "flat_budget": 1.0,
        "flat_cost": macs(wide)["network"] / net["network"],
    }
    d = diffs[best]
    met = d["points"] >= TARGET_POINTS and d["ci95"][0] > 0
    summary = {
        "arch": ARCH,
        "data": P.DS.data,
        "machine": seeds[0]["machine"] if seeds else None,
        "seeds": [r["seed"] for r in seeds],
        "test_images_per_seed": seeds[0]["test_images"] if seeds else None,
        "test_percent": {k: mean_se(100 * r["rows"][k]["test"] for r in seeds) for k in names},
        "validation_int8_percent": {k: 100 * v for k, v in val.items()},
        "macs_per_image_relative": cost,
        "two_stage_macs_relative": net["two_stage_ratio"],  # a photo that a specialist reruns
        "test_photos_rerun_by_a_specialist": float(np.mean(rerun)),
        "training": {
            "efficient": "tail 10 epochs + 2 QAT at {} px, then specialists: 10 epochs over each superclass's "
            "images".format(size),
            "flat_budget": "tail 20 epochs + 2 QAT at {} px".format(size),
            "flat_cost": "tail 20 epochs + 2 QAT at {} px".format(wide),
        },
        "shipped_specialists_per_seed": [len(r["rows"]["efficient"]["shipped"]) for r in seeds],
        "best_control": best,
        "chosen_on": "validation (int8 accuracy of the kept epoch, mean over seeds)",
        "efficient_minus": diffs,
        "target": "efficient >= best control + {:.1f} point, interval above 0".format(TARGET_POINTS),
        "target_met": bool(met),
        "note": "± is the standard error over seeds; intervals are paired bootstraps over the test photos, "
        "pooled over seeds and resampled within each",
    }
    write_result(os.path.join(out, "summary.json"), summary)
    se = lambda m: "" if m["se"] is None else " ± {:.2f}".format(m["se"])  # noqa: E731
    what = {
        "base": "the specialists' own base (10 + 2 epochs)",
        "efficient": "base + tail specialists, keep-base rule",
        "flat_budget": "flat, equal training budget (20 + 2 epochs)",
        "flat_cost": "flat at {} px, equal budget, cost >= two-stage".format(wide),
    }
    lines = [
        "# Super-Sub on a pretrained backbone: the verdict (EfficientNet-Lite0, {})".format(P.DS.title),
        "",
        "Machine: {}. Seeds: {}; {} test photos each, int8 through ONNX Runtime.".format(
            summary["machine"], ", ".join(map(str, summary["seeds"])), summary["test_images_per_seed"]
        ),
        "",
        "| row | what | MACs / image | test | efficient − row (95% paired) |",
        "|---|---|---:|---:|---:|",
    ]
    for k in names:
        t = summary["test_percent"][k]
        gap = "" if k == "efficient" else "{:+.2f} [{:+.2f}, {:+.2f}]".format(diffs[k]["points"], *diffs[k]["ci95"])
        lines.append("| {} | {} | {:.2f}x | {:.2f}%{} | {} |".format(k, what[k], cost[k], t["mean"], se(t), gap))
    lines += [
        "",
        "Specialists shipped per seed (of {}): {}. MACs per image are the test photos' mean: a photo a specialist "
        "reruns costs {:.2f}x ({:.1%} of test photos were rerun).".format(
            P.DS.superclasses,
            ", ".join(map(str, summary["shipped_specialists_per_seed"])),
            net["two_stage_ratio"],
            float(np.mean(rerun)),
        ),
        "Control chosen on validation: {} ({}).".format(
            best, ", ".join("{} {:.2f}%".format(k, 100 * v) for k, v in sorted(val.items()))
        ),
        "Target (efficient ≥ best control + {:.1f} point, interval above 0): {}.".format(
            TARGET_POINTS, "met" if met else "not met"
        ),
    ]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--cache", default="cache-fresh", help="the trunk cache folder in the work folder")
    ap.add_argument("--aggregate", action="store_true", help="only the summary, from the seed files")
    P.add_dataset_option(ap)
    a = ap.parse_args()
    P.use(a.dataset)
    if not a.aggregate:
        for seed in a.seeds:
            run_seed(seed, a.cache)
    aggregate()


if __name__ == "__main__":
    main()
