#!/usr/bin/env python
"""Gated top-2 through the runtime, with the routing the bundle carries.

For runs of ``benchmarks/hierarchy_learning.py`` (trained with its 1,000-image validation
split), export the int8 bundle with the current exporter, which chooses the gate and the
routing weight beta on that validation split with the int8 networks and writes them to the
manifest's ``routing``.  Then classify the full test set with ONNX Runtime three ways:

  * top-1 (``--policy per-image``);
  * gated top-2 with equation 2 (beta = 1; the gate chosen on the validation split the same way);
  * gated top-2 with the bundle's routing (``--policy topk`` with no settings: what a user gets).

Reports accuracy, stage-1 errors, how many of them the second route recovers, how many right
answers it loses, and the extra switches per image.

With ``--not-mine R`` each hierarchy is measured again with subclass networks that have a
"not mine" row (trained here, ``--ft-outliers R --ft-not-mine``), side by side.

With ``--routing-images N`` the routing is chosen at export on N training images the run never
used instead of its validation split; from 2,000 images on, export also learns a gate and a
combiner per pair of clusters (``routing.learned``), and "bundle routing" measures them.
``--combiner-inputs outputs`` keeps the subclass networks' pooled features out of the
combiners' search, for a side-by-side on the same networks.

Writes benchmarks/results/hierarchy/routing-bundle-<dataset>[-<tag>].json (seeds/ for
``<dataset>-seedN``).

Usage (after hierarchy_learning.py --dataset D ... --work W; --train trains the int8 networks
of runs measured without --efficient):
  EDGETOOL_THREADS=2 python benchmarks/routing_bundle.py --dataset fashion-mnist --work W
  EDGETOOL_THREADS=2 python benchmarks/routing_bundle.py --dataset cifar10 --work W --train
  EDGETOOL_THREADS=2 python benchmarks/routing_bundle.py --dataset cifar10 --work W --hierarchies given \
      --not-mine 4 --tag notmine4
  EDGETOOL_THREADS=2 python benchmarks/routing_bundle.py --dataset cifar10 --work W --hierarchies given \
      --not-mine 4 --routing-images 30000 --tag learned
  python benchmarks/routing_bundle.py --dataset cifar10 --tag learned --across-seeds  # a table of seeds 0-2
"""

import argparse
import json
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

from common import write_result  # noqa: E402
from common.routing import OUT, result_folder, run_path, unused_training_images  # noqa: E402
from common.runs import not_mine_run  # noqa: E402


def classify_all(be, x, **kw):
    """(predictions, extra switches per image, the routing settings used)."""
    from edgetool.runtime.classifier import SuperSubClassifier

    clf = SuperSubClassifier(be, **kw)
    preds = [p for i in range(0, len(x), 256) for p in clf.classify(x[i : i + 256])]
    return preds, clf.extra_passes_per_image, clf.routing


def measure(run, bundle_dir: str, data=None, combiner_features: bool = True) -> dict:
    """Top-1, equation 2 and the bundle's routing through ONNX Runtime; routing chosen on the
    run's validation split, or on *data* (images, labels); *combiner_features* False: the pair
    combiners may take the networks' outputs only."""
    from edgetool.runtime.backends.ort import OrtBackend
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.toolchain.routing.search import choose_on_validation

    if not os.path.isfile(os.path.join(bundle_dir, "manifest.json")):
        run.export(bundle_dir, routing_data=data, combiner_features=combiner_features)
    base, subs = run.super_qat(), [run.sub_qat(k) for k in range(run.hier.n_super)]
    eq2 = choose_on_validation(run, subs, 2, betas=(1.0,), base=base, data=data)
    assert eq2 is not None, "the run has no validation split"
    x, y = run.xte.numpy(), run.yte.numpy()
    index = {c: i for i, c in enumerate(run.train.classes)}
    out = {}
    with Bundle.open(bundle_dir) as b, OrtBackend(b) as be:
        ways = (
            ("top-1", dict(policy="per-image")),
            ("equation 2", dict(policy="topk", gate=eq2.gate, k=2, beta=1.0)),
            ("bundle routing", dict(policy="topk")),
        )
        top1 = stage1 = None
        for name, kw in ways:
            t0 = time.perf_counter()
            preds, extra, r = classify_all(be, x, **kw)
            pred = np.array([index[p.label] for p in preds])
            right = pred == y
            if top1 is None:
                top1 = right
                stage1 = run.data.local[np.array([p.superclass for p in preds]), y] < 0
            out[name] = {
                "policy": kw["policy"],
                "gate": r.gate if kw["policy"] == "topk" else None,
                "beta": r.beta if kw["policy"] == "topk" else None,
                "chosen_on": r.chosen_on if kw["policy"] == "topk" else None,
                "accuracy": float(right.mean()),
                "stage1_errors": int(stage1.sum()),
                "recovered": int((stage1 & right).sum()),
                "recovered_fraction": float((stage1 & right).sum() / max(1, stage1.sum())),
                "lost": int((top1 & ~right).sum()),
                "extra_switches_per_image": float(extra),
                "seconds": time.perf_counter() - t0,
            }
            print(
                "{}: {:.2%} recovered {}/{} lost {} at {:.3f} extra switches (gate {}, beta {})".format(
                    name,
                    right.mean(),
                    out[name]["recovered"],
                    out[name]["stage1_errors"],
                    out[name]["lost"],
                    extra,
                    out[name]["gate"],
                    out[name]["beta"],
                ),
                flush=True,
            )
        out["bundle_routing"] = b.routing.to_dict() if b.routing else None
    return out


def result_path(dataset: str, tag: str = "") -> str:
    folder = result_folder(dataset)
    return os.path.join(folder, "routing-bundle-{}{}.json".format(dataset, "-" + tag if tag else ""))


def mean_se(values) -> str:
    v = np.asarray(values, dtype=float)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return "{:.1f}% ± {:.1f}%".format(100 * v.mean(), 100 * se)


def across_seeds(dataset: str, tag: str, seeds=(0, 1, 2)) -> str:
    """A markdown table per hierarchy of the tagged results of seed 0 and ``<dataset>-seedN``."""
    runs = [json.load(open(result_path(dataset if s == 0 else "{}-seed{}".format(dataset, s), tag))) for s in seeds]
    lines = [
        "## {}: int8 bundles through ONNX Runtime, routing chosen at export, per seed".format(dataset),
        "",
        "Written by `benchmarks/routing_bundle.py --across-seeds --tag {}` from its per-seed results; measured "
        "on {}. Routing chosen on {}; the test set is the full {} images.".format(
            tag,
            "; ".join(sorted({r["machine"] for r in runs})),
            runs[0]["networks"].split("chosen at export on ")[-1],
            runs[0]["test_images"],
        ),
    ]
    for h in runs[0]["hierarchies"]:
        lines += [
            "",
            "### {}".format(h),
            "",
            "| seed | machine | top-1 | equation 2 | the bundle's routing | stage-1 errors recovered "
            "| right answers lost | extra switches / image |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for seed, r in zip(seeds, runs):
            d = r["hierarchies"][h]
            b = d["bundle routing"]
            lines.append(
                "| {} | {} | {:.2%} | {:.2%} | {:.2%} | {} of {} ({:.1%}) | {} | {:.3f} |".format(
                    seed,
                    r["machine"].split(",")[0],
                    d["top-1"]["accuracy"],
                    d["equation 2"]["accuracy"],
                    b["accuracy"],
                    b["recovered"],
                    b["stage1_errors"],
                    b["recovered_fraction"],
                    b["lost"],
                    b["extra_switches_per_image"],
                )
            )
        ways = [r["hierarchies"][h] for r in runs]
        lines += [
            "",
            "Recovered: {}; the bundle's routing over top-1: {} points; over equation 2: {} points "
            "(mean ± SE over {} seeds).".format(
                mean_se([w["bundle routing"]["recovered_fraction"] for w in ways]),
                mean_se([w["bundle routing"]["accuracy"] - w["top-1"]["accuracy"] for w in ways]).replace("%", ""),
                mean_se([w["bundle routing"]["accuracy"] - w["equation 2"]["accuracy"] for w in ways]).replace("%", ""),
                len(ways),
            ),
        ]
    first, *others = runs[0]["hierarchies"]
    for h in others:
        gain = [
            r["hierarchies"][h]["bundle routing"]["accuracy"] - r["hierarchies"][first]["bundle routing"]["accuracy"]
            for r in runs
        ]
        lines += [
            "",
            "{} against {}, the bundle's routing: {} points.".format(h, first, mean_se(gain).replace("%", "")),
        ]
    return "\n".join(lines) + "\n"


def main():
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.train.run import Run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--work", help="hierarchy_learning.py's --work folder (needed but with --across-seeds)")
    ap.add_argument("--hierarchies", nargs="+", default=["given", "learned-overlap"])
    ap.add_argument("--train", action="store_true", help="train the int8 (QAT) networks where the run has none")
    ap.add_argument("--tag", default="", help="write routing-bundle-<dataset>-<tag>.json instead")
    ap.add_argument(
        "--not-mine",
        type=float,
        default=0.0,
        help='also each hierarchy with "not mine" subclass networks trained on this many other-superclass '
        "images per own image (--ft-outliers R --ft-not-mine)",
    )
    ap.add_argument(
        "--routing-images",
        type=int,
        default=0,
        help="choose the routing at export on this many training images the run never used (a larger "
        "validation split: with 2,000 or more, export also learns a gate and pair combiners)",
    )
    ap.add_argument(
        "--combiner-inputs",
        choices=("any", "outputs"),
        default="any",
        help="'outputs': export's router search leaves out the pooled features, as before combiners could take "
        "them in (its own bundle folder, <...>-outputs)",
    )
    ap.add_argument("--across-seeds", action="store_true", help="only write routing-bundle-seeds-<dataset>-<tag>.md")
    args = ap.parse_args()
    if args.across_seeds:
        text = across_seeds(args.dataset, args.tag)
        with open(os.path.join(OUT, "routing-bundle-seeds-{}-{}.md".format(args.dataset, args.tag)), "w") as f:
            f.write(text)
        print(text)
        return
    if not args.work:
        ap.error("--work is required")
    t0 = time.perf_counter()
    where = "{} training images the run never used".format(args.routing_images) if args.routing_images else ""
    result = {
        "dataset": args.dataset,
        "machine": machine_name(),
        "networks": "int8 (QAT) bundle, ONNX Runtime; routing chosen at export on "
        + (where or "the run's validation split"),
        "combiner_inputs": args.combiner_inputs,
        "hierarchies": {},
    }
    runs = [(h, run_path(args.work, args.dataset, h), args.train) for h in args.hierarchies]
    if args.not_mine:  # trained here, whatever --train says
        runs += [
            ("{}, not mine {:g}".format(h, args.not_mine), not_mine_run(p, args.not_mine), True) for h, p, _ in runs
        ]
    for h, path, train in runs:
        if not os.path.isfile(os.path.join(path, "super_qat.pt")) and not train:
            print("{}: no int8 networks at {}; skipped (--train trains them)".format(h, path))
            continue
        run = Run.open(path, progress=False)
        run.train_all(with_flat=False, with_vanilla=False)  # the QAT networks where missing; the rest is cached
        data = unused_training_images(run, args.routing_images) if args.routing_images else None
        result["validation_images"] = len(data[1]) if data else len(run.data.val)
        result["test_images"] = len(run.yte)
        folder = "bundle-routing" + ("-{}".format(args.routing_images) if data else "")
        folder += "-outputs" if args.combiner_inputs == "outputs" else ""
        features = args.combiner_inputs != "outputs"
        result["hierarchies"][h] = measure(run, os.path.join(path, folder), data, features)
    result["seconds"] = time.perf_counter() - t0
    write_result(result_path(args.dataset, args.tag), result)


if __name__ == "__main__":
    main()
