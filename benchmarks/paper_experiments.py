#!/usr/bin/env python
"""The paper's experiments on real data, as edgetool runs them.

For one dataset: trains the flat lower bound, the superclass network, from-scratch subclass
networks (the oracle upper bound), fine-tuned (vanilla) and QAT fine-tuned (efficient)
subclass networks; exports the bundle; writes the evaluation report (Markdown, HTML, JSON,
plots) measuring the efficient Super-Sub through the runtime; then sweeps the delta budget
(top-k sparse diff) and plots storage (1 + xN) against accuracy.

Usage:
  python benchmarks/paper_experiments.py --dataset fashion-mnist [--train-per-class 2000]
  python benchmarks/paper_experiments.py --dataset cifar10 [--train-per-class 1000]

Data comes from ../shared/datasets (see its READMEs).  Results go to
benchmarks/results/<dataset>/ (summary.json, report.*, *.png); the training run goes to
--work (default edgetool-out/bench-<dataset>), resumable.
"""
import argparse
import copy
import json
import os
import shutil
import tarfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "datasets")


def dataset_dir(name, work):
    if name == "fashion-mnist":
        return os.path.join(SHARED, "fashion-mnist"), None
    if name == "cifar10":
        src = os.path.join(SHARED, "cifar10-jpg")
        dest = os.path.join(work, "data")
        root = os.path.join(dest, "CIFAR-10-images")
        if not os.path.isdir(os.path.join(root, "test")):
            os.makedirs(dest, exist_ok=True)
            with tarfile.open(os.path.join(src, "CIFAR-10-images.tar.gz")) as tar:
                tar.extractall(dest)
        return root, os.path.join(src, "hierarchy.json")
    raise SystemExit("unknown dataset {}".format(name))


def pareto_plot(points, acc, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["x_zstd"] for p in points]
    ys = [100 * p["efficient"] for p in points]
    ax.plot(xs, ys, "o-", color="#ff7f0e", label="efficient int8 Super-Sub (top-k sparse diff)")
    for p in points:
        ax.annotate("k={:g}".format(p["topk"]) if p["topk"] else "dense", (p["x_zstd"], 100 * p["efficient"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    lo, up = 100 * acc["lower"], 100 * acc["upper"]
    ax.axhline(lo, color="#d62728", ls="--", lw=1, label="lower bound (flat)")
    ax.axhline(up, color="#2ca02c", ls="--", lw=1, label="upper bound (oracle)")
    ax.axhline(lo + 0.85 * (up - lo), color="gray", ls=":", lw=1, label="85% of the gap")
    ax.axvline(0.1, color="black", ls=":", lw=1, label="x = 0.1 target")
    ax.axvline(0.2, color="gray", ls="-.", lw=1, label="x = 0.2 (paper)")
    ax.set_xlabel("storage per subclass network x (bundle = 1 + xN networks, zstd)")
    ax.set_ylabel("accuracy [%]")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=["fashion-mnist", "cifar10"])
    ap.add_argument("--train-per-class", type=int, default=2000)
    ap.add_argument("--arch", default="resnet8")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--topk", type=float, nargs="*", default=[0.3, 0.15])
    ap.add_argument("--work", default=None)
    args = ap.parse_args()

    from edgetool.toolchain.cli import machine_name
    from edgetool.toolchain.evaluate import evaluate
    from edgetool.toolchain.pipeline import Run, TrainConfig
    from edgetool.toolchain import train as T

    t_start = time.perf_counter()
    work = args.work or os.path.join("edgetool-out", "bench-" + args.dataset)
    data, hier = dataset_dir(args.dataset, work)
    n_classes = 10
    cfg = TrainConfig(data=data, hierarchy=hier, arch=args.arch, epochs=args.epochs,
                      limit_train=args.train_per_class * n_classes, pad=4 if args.dataset == "cifar10" else 0)
    out = os.path.join(HERE, "results", args.dataset)
    os.makedirs(out, exist_ok=True)
    run = Run(os.path.join(work, "run"), cfg)
    run.train_all()
    for k in range(run.hier.n_super):
        run.vanilla(k, init="scratch")
    bundle = os.path.join(work, "bundle")
    run.export(bundle)
    rep = evaluate(run, bundle, out, upper="scratch")

    # delta budget: top-k sparse diff sweep (each point a run sharing the superclass networks)
    y = run.yte.numpy()
    true_k, true_j = run.sup_of[y], run.loc_of[y]
    base = run.super_qat()
    route = T.predict_logits(base, run.xte, run.hier.n_super).argmax(1).numpy()
    from edgetool.runtime import codecs
    from edgetool.toolchain.qat import code_delta

    def point(r, topk):
        ok = np.zeros(len(y), dtype=bool)
        xs, xs7 = [], []
        bc = base.int8_codes()
        nbytes = sum(v.size for v in bc.values())
        for k in range(r.hier.n_super):
            net = r.sub_qat(k)
            idx = np.nonzero(route == k)[0]
            j = T.predict_logits(net, r.xte[idx], len(r.hier.subclasses[k])).argmax(1).numpy()
            ok[idx] = (true_k[idx] == k) & (true_j[idx] == j)
            d = code_delta(base, net).tobytes()
            fl = net.float_tensors()
            bf = base.float_tensors()
            fd = np.concatenate([(fl[n] - bf[n]).ravel() for n in fl]).astype(np.float32).tobytes()
            xs.append(len(codecs.encode("zstd", d + fd)) / nbytes)
            xs7.append(len(codecs.encode("7z", d + fd)) / nbytes)
        return {"topk": topk, "efficient": float(ok.mean()), "x_zstd": float(np.mean(xs)), "x_7z": float(np.mean(xs7))}

    points = [point(run, 0.0)]
    for f in args.topk:
        pdir = os.path.join(work, "topk-{:g}".format(f))
        os.makedirs(pdir, exist_ok=True)
        for name in ("super.pt", "super_qat.pt", "flat.pt"):
            if not os.path.exists(os.path.join(pdir, name)):
                shutil.copy(os.path.join(run.path, name), os.path.join(pdir, name))
        c = copy.deepcopy(cfg)
        c.delta_topk = f
        r = Run(pdir, c)
        points.append(point(r, f))
        print("delta budget", points[-1], flush=True)
    acc = rep["accuracy"]
    lo, up = acc["lower"], acc["upper"]
    for p in points:
        p["gap_closed"] = (p["efficient"] - lo) / (up - lo) if up != lo else float("nan")
    target = [p for p in points if p["x_zstd"] <= 0.1 and p["gap_closed"] >= 0.85]
    pareto_plot(points, acc, os.path.join(out, "pareto.png"), "Delta budget: {} ({})".format(args.dataset, args.arch))

    summary = {
        "benchmark": "paper_experiments", "dataset": args.dataset, "machine": machine_name(), "arch": args.arch,
        "train_images": int(len(run.ytr)), "test_images": int(len(y)), "superclasses": run.hier.superclasses,
        "accuracy": acc, "gap_closed": rep["headline"],
        "storage_per_subclass_network": rep["storage_per_subclass_network"],
        "delta_budget": points,
        "target_x_le_0.1_and_gap_closed_ge_85pct": {"reached": bool(target), "points": target},
        "seconds": time.perf_counter() - t_start,
        "train_seconds": run.train_seconds(),
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: summary[k] for k in ("accuracy", "gap_closed", "storage_per_subclass_network")}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
