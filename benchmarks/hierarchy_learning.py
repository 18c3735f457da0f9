#!/usr/bin/env python
"""Learned against given hierarchies, and routing that can recover (Chennupati et al.).

For one dataset:
  1. the flat network over all classes, with a stratified validation split held out
     (``--val-fraction``); it is the lower bound, and its validation confusion is what
     ``edgetool hierarchy learn`` clusters (UPGMA on 1 - C, top-down with cap theta, overlap gamma);
  2. for each hierarchy (the given one where the dataset has one; learned; learned with overlap):
     the superclass network from the flat trunk and the vanilla fp32 subclass networks
     (the flat network is shared: its checkpoint is copied, not retrained);
  3. per hierarchy, on the test set: top-1 routing (the paper's), confidence-gated top-2
     routing with equation 2 (the gate chosen on the validation split: best accuracy at <= 0.2
     extra switches per image), and equation 2 over every superclass; stage-1 errors and how
     many the gated route recovers; the upper bound (true primary superclass) and gap closed;
  4. adaptive network selection (Algorithm 2): per cluster, the subclass network with the best
     validation accuracy among base-ft (the vanilla one), flat-ft and the restricted flat network;
  5. Caltech-101 (no taxonomy): the single network with the same budget: the flat network trained
     on for the image-epochs the learned hierarchy added (superclass + every subclass fine-tune).
  With ``--efficient NAME`` the hierarchy NAME is also trained with QAT, exported and measured
  through the runtime (ONNX Runtime) with the same gated top-2 policy.  With ``--outliers R``
  every hierarchy's subclass networks are also fine-tuned with outlier exposure
  (``--ft-outliers R``: R images of other superclasses per own image, trained toward an unsure
  output) from the same superclass network, and routed the same way.

Writes benchmarks/results/hierarchy/<dataset>.json, <dataset>-<hierarchy>.png (dendrograms),
<dataset>-<hierarchy>.json (learned hierarchy files) and, from every dataset file present,
summary.md.  ``--seed N`` (N > 0) repeats a dataset with another seed into seeds/ (its own
flat network, so its own learned hierarchies); summary.md then compares the hierarchies
across the seeds present.

Usage (training runs under the shared lock with one thread):
  EDGETOOL_THREADS=1 python benchmarks/hierarchy_learning.py --dataset fashion-mnist --efficient learned-overlap given
  EDGETOOL_THREADS=1 python benchmarks/hierarchy_learning.py --dataset caltech101
  python benchmarks/hierarchy_learning.py --summary
"""

import argparse
import copy
import json
import math
import os
import shutil
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "datasets")
OUT = os.path.join(HERE, "results", "hierarchy")

from common import write_result  # noqa: E402
from common.data import data_source  # noqa: E402
from common.runs import dict_cfg, open_run, share_flat, sibling  # noqa: E402

PAPER_CALTECH = {"single CNN": 0.5512, "hierarchical model": 0.5157, "adaptive network selection": 0.5325}

# per dataset: training config, theta (the given hierarchy's largest superclass, or ceil(sqrt(K))), gamma of
# the overlapping variant
FULL = ("given", "learned", "learned-overlap")
GAMMAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
SETTINGS = {
    "fashion-mnist": dict(
        cfg=dict(limit_train=10000, epochs=8, base_epochs=3, ft_epochs=10),
        theta=4,
        gamma=3.0,
        hierarchies=FULL,
        candidates=("base-ft", "flat-ft", "flat"),
    ),
    "cifar10": dict(
        cfg=dict(limit_train=10000, epochs=8, base_epochs=3, ft_epochs=10, pad=4),
        theta=6,
        gamma=3.0,
        hierarchies=FULL,
        candidates=("base-ft", "flat-ft", "flat"),
    ),
    # 64x64 and 102 classes on 2 CPU cores: one learned hierarchy, short fine-tunes, no flat-ft candidate
    "caltech101": dict(
        cfg=dict(image_size=64, pad=4, epochs=12, base_epochs=2, ft_epochs=3, hierarchy="single"),
        theta=11,
        gamma="auto:0.25",
        hierarchies=("learned-overlap",),
        candidates=("base-ft", "flat"),
    ),
}


def learn_hierarchy(flat_path, name, theta, gamma, dataset, seed=0):
    """Learn from the flat network's validation confusion; write the file beside the runs and into results."""
    from edgetool.toolchain.hierarchy.cli import plot_dendrogram, run_confusion
    from edgetool.toolchain.hierarchy.learn import learn

    conf, classes = run_confusion(flat_path, "val")
    if isinstance(gamma, str):  # "auto:F": the largest gamma of GAMMAS sharing at most F x K classes
        cap = float(gamma.split(":")[1]) * len(classes)
        ok = [g for g in GAMMAS if sum(len(o) for o in learn(conf, classes, theta, g)[0].overlap) <= cap]
        gamma = max(ok) if ok else None
    hier, z = learn(conf, classes, theta, gamma)
    d = hier.to_dict()
    d["label_index"] = {str(i): c for i, c in enumerate(classes)}
    d["learned"] = {"method": "UPGMA on D = 1 - C", "theta": theta, "gamma": gamma, "source": "flat network, val"}
    path = os.path.join(os.path.dirname(flat_path), name + ".json")
    with open(path, "w") as f:
        json.dump(d, f, indent=1)
    stem = os.path.join(OUT if not seed else os.path.join(OUT, "seeds"), dataset + seed_suffix(seed) + "-" + name)
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    shutil.copy(path, stem + ".json")
    plot_dendrogram(z, classes, hier, theta, stem + ".png")
    return path, gamma


def accuracies(topk, flat_acc, upper):
    """Top-1 and gated top-2 accuracy of one routing result, with the gap each closes."""
    from edgetool.toolchain.evaluate.metrics import gap_closed

    return {
        key: {"accuracy": acc, "gap_closed": gap_closed(acc, flat_acc, upper)}
        for key, acc in (("top1", topk["top1_accuracy"]), ("gated_top2", topk["accuracy"]))
    }


def image_epochs(run):
    """Training images seen: flat + superclass + every subclass fine-tune (shared classes counted in each)."""
    n = len(run.ytr)
    subs = sum(int(run.sub_mask(k).sum()) for k in range(run.hier.n_super))
    return run.cfg.epochs * n + run.cfg.base_epochs * n + run.cfg.ft_epochs * subs


def measure(run, flat_acc, candidates):
    from edgetool.toolchain.evaluate import bounds as B
    from edgetool.toolchain.evaluate.metrics import gap_closed
    from edgetool.toolchain.routing.search import policies

    N = run.hier.n_super
    vanilla = [run.vanilla(k) for k in range(N)]
    y = run.yte.numpy()
    upper = float(B.two_stage(run, vanilla, run.sup_of[y]).mean())
    rp = policies(run, vanilla, k=2, betas=(1.0,))
    out = {
        "superclasses": N,
        "largest_superclass": max(len(s) for s in run.hier.subclasses),
        "shared_classes": sum(len(o) for o in run.hier.overlap),
        "hierarchy": run.hier.to_dict()["superclasses"],
        "upper": upper,
        "routing_top1_contains_class": 1.0 - rp["topk"]["stage1_errors"] / len(y),
    }
    out.update(accuracies(rp["topk"], flat_acc, upper))
    acc = rp["all_superclasses"]["accuracy"]
    out["all_superclasses"] = {"accuracy": acc, "gap_closed": gap_closed(acc, flat_acc, upper)}
    out["routing"] = rp
    out["adaptive"] = adaptive(run, flat_acc, upper, candidates)
    flat_ft = run.cfg.ft_epochs * sum(int(run.sub_mask(k).sum()) for k in range(N)) if "flat-ft" in candidates else 0
    out["train_image_epochs"] = image_epochs(run) + flat_ft
    out["train_seconds"] = run.train_seconds()
    return out


def with_outliers(run, ratio, flat_acc, upper, progress):
    """The same hierarchy's vanilla subclass networks fine-tuned with outlier exposure, from the
    same superclass network (flat.pt and super.pt shared), routed top-1 and gated top-2."""
    from edgetool.toolchain.routing.search import policies

    oe = sibling(run, "-outliers{:g}".format(ratio), progress, ft_outliers=ratio)
    rp = policies(oe, [oe.vanilla(k) for k in range(oe.hier.n_super)], k=2, betas=(1.0,))
    out = {"ft_outliers": ratio, "routing": rp["topk"], "all_superclasses": rp["all_superclasses"]}
    out.update(accuracies(rp["topk"], flat_acc, upper))
    out["train_seconds"] = {k: v for k, v in oe.train_seconds().items() if k.startswith("vanilla")}
    return out


def adaptive(run, flat_acc, upper, candidates):
    """Algorithm 2 as `edgetool evaluate --adaptive` runs it, with the gaps closed."""
    from edgetool.toolchain.evaluate.report import adaptive_selection

    out = adaptive_selection(run, candidates)
    out.update(accuracies(out["routing"], flat_acc, upper))
    return out


def efficient(run, rp_gate, path):
    """QAT + export + the runtime's gated top-2 policy on the bundle (ONNX Runtime)."""
    from edgetool.runtime.backends.ort import OrtBackend
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.classifier import SuperSubClassifier

    run.train_all(with_flat=False)
    bundle = os.path.join(path, "bundle")
    if not os.path.isfile(os.path.join(bundle, "manifest.json")):
        run.export(bundle)
    x, y = run.xte.numpy(), run.yte.numpy()
    classes = run.train.classes
    out = {}
    with Bundle.open(bundle) as b, OrtBackend(b) as be:
        for name, pol, gate in (("top1", "per-image", 1.0), ("gated_top2", "topk", rp_gate)):
            clf = SuperSubClassifier(be, policy=pol, gate=gate, k=2, beta=1.0)  # equation 2, as measured
            preds = [p for i in range(0, len(x), 256) for p in clf.classify(x[i : i + 256])]
            acc = float(np.mean([classes.index(p.label) == t for p, t in zip(preds, y)]))
            out[name] = {"accuracy": acc, "extra_switches_per_image": clf.extra_passes_per_image}
        out["bundle_bytes"] = b.stored_bytes()
    out["measured_with"] = "runtime (ONNX Runtime on the exported int8 bundle)"
    return out


def run_dataset(args):
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.train.run import TrainConfig

    st = SETTINGS[args.dataset]
    work = os.path.join(args.work, args.dataset + seed_suffix(args.seed))
    os.makedirs(work, exist_ok=True)
    os.makedirs(OUT, exist_ok=True)
    out_file = result_file(args.dataset, args.seed)
    data, given = data_source(args.dataset, work)
    cfg = TrainConfig(data=data, hierarchy=given, arch="resnet8", seed=args.seed, val_fraction=0.1)
    for k, v in st["cfg"].items():
        setattr(cfg, k, v)
    t0 = time.perf_counter()
    flat_path = os.path.join(work, "flat")
    flat_run = open_run(flat_path, cfg, args.progress)
    flat_run.flat()
    from edgetool.toolchain.train import fit as training

    flat_acc = float(
        (training.predict_logits(flat_run.flat(), flat_run.xte).argmax(1).numpy() == flat_run.yte.numpy()).mean()
    )
    hiers, gammas = {}, {}
    for name in st["hierarchies"]:
        if name == "given":
            hiers[name] = flat_path  # the flat run itself uses the given hierarchy
        else:
            gamma = st["gamma"] if name == "learned-overlap" else None
            hiers[name], gammas[name] = learn_hierarchy(flat_path, name, st["theta"], gamma, args.dataset, args.seed)
    result = {
        "dataset": args.dataset,
        "machine": machine_name(),
        "config": dict(cfg.__dict__),
        "theta": st["theta"],
        "gamma": st["gamma"],
        "gamma_used": gammas.get("learned-overlap"),
        "train_images": int(len(flat_run.ytr)),
        "val_images": int(len(flat_run.data.val)),
        "test_images": int(len(flat_run.yte)),
        "classes": len(flat_run.train.classes),
        "lower_flat": flat_acc,
        "hierarchies": {},
    }
    for name, h in hiers.items():
        if name == "given":
            run = flat_run
        else:
            path = os.path.join(work, name)
            share_flat(flat_path, path)
            run = open_run(path, dict_cfg(cfg, hierarchy=h), args.progress)
        m = measure(run, flat_acc, st["candidates"])
        if args.outliers:
            m["outlier_exposure"] = with_outliers(run, args.outliers, flat_acc, m["upper"], args.progress)
        if name in args.efficient:
            m["efficient"] = efficient(run, m["routing"]["topk"]["gate"], run.path)
        result["hierarchies"][name] = m
        print(
            "{} {}: top-1 {:.2%}  gated top-2 {:.2%} (recovered {}/{} at {:.3f} extra/image)  upper {:.2%}".format(
                args.dataset,
                name,
                m["top1"]["accuracy"],
                m["gated_top2"]["accuracy"],
                m["routing"]["topk"]["recovered"],
                m["routing"]["topk"]["stage1_errors"],
                m["routing"]["topk"]["extra_switches_per_image"],
                m["upper"],
            ),
            flush=True,
        )
        write_result(out_file, result)
    if args.dataset == "caltech101":
        result["single_network"] = single_network(cfg, flat_run, work, result, args)
        result["paper_caltech101"] = PAPER_CALTECH
    result["seconds"] = time.perf_counter() - t0
    write_result(out_file, result)


def seed_suffix(seed: int) -> str:
    return "-seed{}".format(seed) if seed else ""


def result_file(dataset: str, seed: int) -> str:
    """Seed 0: results/hierarchy/<dataset>.json (the tables); other seeds: seeds/<dataset>-seed<N>.json."""
    if not seed:
        return os.path.join(OUT, dataset + ".json")
    return os.path.join(OUT, "seeds", dataset + seed_suffix(seed) + ".json")


def seed_lines(ds: str, r0: dict) -> list:
    """Top-1 of each hierarchy over every seed measured (each seed learns its own hierarchy from its
    own flat network), and learned minus given paired by seed: mean and standard error."""
    runs = [r0]
    for seed in range(1, 100):
        path = result_file(ds, seed)
        if os.path.isfile(path):
            with open(path) as f:
                runs.append(json.load(f))
    if len(runs) < 2:
        return []
    seeds = [r["config"]["seed"] for r in runs]

    def top1(r, name):
        return r["hierarchies"][name]["top1"]["accuracy"] if name in r["hierarchies"] else None

    def stat(vals):
        v = np.array([x for x in vals if x is not None])
        se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        return "{:+.2f} ± {:.2f}".format(100 * v.mean(), 100 * se) if len(v) > 1 else "n/a"

    lines = [
        "Across seeds {} (top-1, vanilla subclass networks; each seed learns its hierarchy from its own flat "
        "network):".format(", ".join(map(str, seeds))),
        "",
        "| hierarchy | " + " | ".join("seed {}".format(s) for s in seeds) + " | minus given, mean ± SE (points) |",
        "|---|" + "---:|" * (len(seeds) + 1),
        "| flat | " + " | ".join(pct(r["lower_flat"]) for r in runs) + " | |",
    ]
    for name in runs[0]["hierarchies"]:
        vals = [top1(r, name) for r in runs]
        diff = [None if v is None else v - top1(r, "given") for v, r in zip(vals, runs)]
        lines.append(
            "| {} | {} | {} |".format(
                name, " | ".join("" if v is None else pct(v) for v in vals), "" if name == "given" else stat(diff)
            )
        )
    return lines + [""]


def single_network(cfg, run, work, result, args):
    """The single (flat) network given the same training budget as the hierarchy: the flat network
    trained on for the image-epochs the hierarchy added (superclass, subclass and candidate networks),
    with a fresh cosine schedule at the flat recipe's learning rate."""
    import torch

    from edgetool.toolchain.train import fit as training
    from edgetool.toolchain.train.checkpoints import float_from_state, float_state

    n = result["train_images"]
    budget = max(h["train_image_epochs"] for h in result["hierarchies"].values())
    extra = int(math.ceil(budget / n)) - cfg.epochs

    def make():
        m = copy.deepcopy(run.flat())
        training.fit(m, run.xtr, run.ytr, run.recipe(extra, cfg.lr), seed=cfg.seed + 100, hooks=run.hooks("single"))
        return float_state(m)

    net = float_from_state(run.stage("single", os.path.join(work, "single", "single.pt"), make))
    with torch.no_grad():
        acc = float((training.predict_logits(net, run.xte).argmax(1).numpy() == run.yte.numpy()).mean())
    print("{} single network, {} + {} epochs: {:.2%}".format(args.dataset, cfg.epochs, extra, acc), flush=True)
    return {
        "epochs": cfg.epochs + extra,
        "continued_epochs": extra,
        "image_epochs": (cfg.epochs + extra) * n,
        "hierarchy_image_epochs": budget,
        "accuracy": acc,
    }


def pct(v):
    return "n/a" if v is None else "{:.2f}%".format(100 * v)


def summary():
    lines = [
        "# Learned against given hierarchies; routing that can recover",
        "",
        "Written by `benchmarks/hierarchy_learning.py` (vanilla fp32 subclass networks unless marked int8).",
        "Gated top-2: a second superclass is tried when the superclass confidence is below the gate",
        "(chosen on the validation split: best accuracy at <= 0.2 extra switches per image); the better",
        "p_super x p_sub wins (equation 2). Stage-1 error: top-1 routes the image to a superclass",
        "whose subclass network cannot output its class. Recoverable: stage-1 errors the gate sends down",
        "a second route whose subclass network outputs their class (the most any rule could recover).",
        "Outlier exposure: the subclass networks also fine-tuned on R images of other superclasses per",
        "own image, trained toward an unsure output (`--ft-outliers R`), from the same superclass network.",
        "",
    ]
    for ds in ("fashion-mnist", "cifar10", "caltech101"):
        path = os.path.join(OUT, ds + ".json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            r = json.load(f)
        lines += [
            "## {} ({} classes; {} train / {} validation / {} test images; {})".format(
                ds, r["classes"], r["train_images"], r["val_images"], r["test_images"], r["machine"]
            ),
            "",
            "Flat network (lower bound): {}. theta = {}, gamma = {} ({}) for the overlapping variant.".format(
                pct(r["lower_flat"]), r["theta"], r["gamma_used"], r["gamma"]
            ),
            "",
            "| hierarchy | N | shared | upper | top-1 | gated top-2 | gap closed (gated) | every superclass "
            "| stage-1 errors | recovered | recoverable | extra switches / image | gate |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, h in r["hierarchies"].items():
            rows = [(name, h, h["shared_classes"])]
            if "outlier_exposure" in h:
                o = h["outlier_exposure"]
                rows.append(("{} + outlier exposure {:g}".format(name, o["ft_outliers"]), o, ""))
            for label, m, shared in rows:
                t = m["routing"]
                t = t.get("topk", t)
                g = m["gated_top2"]["gap_closed"]["value"]
                lines.append(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {:.3f} | {} |".format(
                        label,
                        h["superclasses"] if m is h else "",
                        shared,
                        pct(h["upper"]) if m is h else "",
                        pct(m["top1"]["accuracy"]),
                        pct(m["gated_top2"]["accuracy"]),
                        "n/a" if g is None else "{:.0%}".format(g),
                        pct(m["all_superclasses"]["accuracy"]),
                        t["stage1_errors"],
                        t["recovered"],
                        "n/a" if t["recovered_fraction"] is None else "{:.0%}".format(t["recovered_fraction"]),
                        t.get("recoverable", "n/a"),
                        t["extra_switches_per_image"],
                        t["gate"],
                    )
                )
            a = h["adaptive"]
            counts = {c: list(a["choice"].values()).count(c) for c in sorted(set(a["choice"].values()))}
            lines.append(
                "| {} adaptive ({}) | | | | {} | {} | {} | | | {} | | {:.3f} | {} |".format(
                    name,
                    ", ".join("{} {}".format(n, c) for c, n in counts.items()),
                    pct(a["top1"]["accuracy"]),
                    pct(a["gated_top2"]["accuracy"]),
                    "n/a"
                    if a["gated_top2"]["gap_closed"]["value"] is None
                    else "{:.0%}".format(a["gated_top2"]["gap_closed"]["value"]),
                    a["routing"]["recovered"],
                    a["routing"]["extra_switches_per_image"],
                    a["routing"]["gate"],
                )
            )
            if "efficient" in h:
                e = h["efficient"]
                lines.append(
                    "| {} int8 (runtime) | | | | {} | {} | | | | | | {:.3f} | |".format(
                        name,
                        pct(e["top1"]["accuracy"]),
                        pct(e["gated_top2"]["accuracy"]),
                        e["gated_top2"]["extra_switches_per_image"],
                    )
                )
        if "single_network" in r:
            s = r["single_network"]
            lines += [
                "",
                "Single network with the same training budget ({} epochs: the flat network trained on for the "
                "image-epochs the hierarchy added): {}. Chennupati et al. (Table 10): "
                "single CNN {}, hierarchical {}, adaptive network selection {}.".format(
                    s["epochs"],
                    pct(s["accuracy"]),
                    *(
                        pct(PAPER_CALTECH[k])
                        for k in ("single CNN", "hierarchical model", "adaptive network selection")
                    ),
                ),
            ]
        lines.append("")
        lines += seed_lines(ds, r)
    text = "\n".join(lines)
    with open(os.path.join(OUT, "summary.md"), "w") as f:
        f.write(text)
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(SETTINGS))
    ap.add_argument("--work", default=os.path.join("edgetool-out", "bench-hierarchy"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--efficient", nargs="*", default=[], help="hierarchies also trained with QAT and run as bundles")
    ap.add_argument("--outliers", type=float, default=0.0, help="also fine-tune with outlier exposure at this ratio")
    ap.add_argument("--summary", action="store_true", help="only rebuild summary.md from the dataset files")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    if args.dataset and not args.summary:
        run_dataset(args)
    if args.seed:
        return  # summary.md is written from seed 0's files (and lists the other seeds beside them)
    summary()


if __name__ == "__main__":
    main()
