#!/usr/bin/env python
"""Which tail of EfficientNet-Lite0 to fine-tune by default, chosen on validation images only.

Caltech-101 at 224 px (the course split without BACKGROUND_Google, 15% of the training images
held out for validation: the split ``edgetool train --val-fraction 0.15 --seed S`` makes).  The
trunk up to the earliest candidate split is run once over the training images and their mirrors
and cached (as ``train --cache`` does); every later split's input is that output carried through
the frozen blocks in between.  Each candidate tail then trains with the product's own recipe
(AdamW at the default tail learning rate, cosine schedule, batch 128, each image or its mirror,
the epoch of the best validation accuracy kept) for the same number of epochs.

Candidates (``--freeze``): ``blocks.15`` (only the head convolution and the classifier train),
``blocks.14`` (the last MBConv block too), ``blocks.12`` (the last three blocks).  The test split
is not read.  Recorded per candidate: trainable parameters, validation accuracy of the kept epoch,
seconds per epoch, and the trunk's share of a fresh run.  Chosen: the tail with the fewest trainable
parameters whose mean validation accuracy is within one standard error (over seeds) of the best.
Each seed's candidates are kept in the work folder, so a re-run with more seeds trains only those.

Writes benchmarks/results/pretrained/tail-choice-224.json and .md.

Usage:
  python benchmarks/tail_choice.py [--seeds 0 1 2] [--epochs 10]
"""

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch

from common import RESULTS, machine, mean_se, write_result  # noqa: E402
from common.data import caltech_dir  # noqa: E402
from common.pretrained import ARCH, WORK  # noqa: E402

from edgetool.toolchain.data.folders import stratified_split  # noqa: E402
from edgetool.toolchain.train import efficientnet as E  # noqa: E402
from edgetool.toolchain.train.device import set_threads  # noqa: E402
from edgetool.toolchain.train.pretrained import load_pretrained  # noqa: E402
from edgetool.toolchain.train.run_data import TrainConfig  # noqa: E402
from edgetool.toolchain.train.tail import Tail, freeze_trunk, train_tail  # noqa: E402
from edgetool.toolchain.train.transfer import input_spec  # noqa: E402
from edgetool.toolchain.train.trunk_cache import TrunkCache, list_data  # noqa: E402

CANDIDATES = ["blocks.15", "blocks.14", "blocks.12"]  # the earliest last: its cache feeds the others


@torch.no_grad()
def carry(model: E.EfficientNetLite, x: torch.Tensor, after: str, until: str, batch: int = 256) -> torch.Tensor:
    """The output of part *until*, from the output of part *after* (the frozen parts in between)."""
    if after == until:
        return x
    names = [n for n, _ in model.parts()]
    mods = dict(model.parts())
    between = [mods[n] for n in names[names.index(after) + 1 : names.index(until) + 1]]
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        h = x[i : i + batch]
        for m in between:
            h = m(h)
        out.append(h.to(torch.float16).to(torch.float32))  # as the cache stores it
    return torch.cat(out)


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_seed(seed: int, size: int, epochs: int, cache_dir: str, limit: int = 0) -> dict:
    load = [round(x, 2) for x in os.getloadavg()]
    cfg = TrainConfig()
    data, _ = caltech_dir(WORK, background=False)
    train, _, classes = list_data(data, limit, 0, seed)
    keep, val = stratified_split(train.labels, 0.15, seed + 1)
    keep, val = np.sort(keep), np.sort(val)
    spec = input_spec(size)
    base = E.build(ARCH, 3, len(classes))
    load_pretrained(base, "imagenet", ARCH)
    first = CANDIDATES[-1]
    cache = TrunkCache(cache_dir, base, first, spec, cfg.batch, progress=sys.stderr.isatty())
    t0 = time.perf_counter()
    plain = cache.get(train, "train")
    mirror = cache.get(train, "train", flip=True)
    cache_wall = time.perf_counter() - t0
    y = torch.from_numpy(train.labels)
    rows = []
    for split in CANDIDATES:
        model = copy.deepcopy(base)
        torch.manual_seed(seed)
        model.fc.reset_parameters()  # the same fresh classifier for every candidate
        t1 = time.perf_counter()
        views_all = [carry(model, v, first, split) for v in (plain, mirror)]
        carry_s = time.perf_counter() - t1
        views = [v[keep] for v in views_all]
        xval = views_all[0][val]
        freeze_trunk(model, split)
        model.eval()
        tail = Tail(model, split)
        t2 = time.perf_counter()
        hist = train_tail(
            tail, views, y[keep], (xval, y[val]), epochs, cfg.tail_lr, cfg.batch, seed,
            "tail after {}".format(split), sys.stderr.isatty(),
        )  # fmt: skip
        train_s = time.perf_counter() - t2
        kept = hist["kept_epoch"]
        row = {
            "freeze": split,
            "trainable_parameters": trainable(model),
            "validation": hist["val_accuracy"][kept - 1],
            "kept_epoch": kept,
            "val_accuracy_per_epoch": hist["val_accuracy"],
            "seconds_per_epoch": train_s / epochs,
            "carry_seconds": carry_s,
        }
        print(
            "seed {} freeze {}: {:,} trainable, validation {:.2f}% (epoch {}), {:.1f} s/epoch".format(
                seed, split, row["trainable_parameters"], 100 * row["validation"], kept, row["seconds_per_epoch"]
            ),
            flush=True,
        )
        rows.append(row)
    return {
        "seed": seed,
        "validation_images": int(len(val)),
        "train_images": int(len(keep)),
        "trunk_pass_seconds": cache.seconds,
        "cache_wall_seconds": cache_wall,
        "load_average_at_start": load,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "candidates": rows,
    }


RULE = (
    "the tail with the fewest trainable parameters whose mean validation accuracy is within one standard error "
    "(over seeds; 0 with one seed) of the best; the test split is not read"
)


def choose(table: list) -> dict:
    """The one-standard-error rule over the candidates' validation accuracy (see RULE)."""
    top = max(table, key=lambda r: r["validation_percent"]["mean"])
    floor = top["validation_percent"]["mean"] - (top["validation_percent"]["se"] or 0.0)
    near = [r for r in table if r["validation_percent"]["mean"] >= floor]
    return min(near, key=lambda r: r["trainable_parameters"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--cache", default="cache-tail-choice", help="trunk cache folder in the work folder")
    ap.add_argument("--limit", type=int, default=0, help="at most this many training images (a quick check; not saved)")
    a = ap.parse_args()
    set_threads()
    per_seed = []
    for seed in a.seeds:  # each seed's candidates kept in the work folder: a re-run adds seeds
        memo = os.path.join(WORK, "tail-choice-{}px-e{}-seed{}.json".format(a.size, a.epochs, seed))
        if os.path.isfile(memo) and not a.limit:
            with open(memo) as f:
                per_seed.append(json.load(f))
            continue
        per_seed.append(run_seed(seed, a.size, a.epochs, os.path.join(WORK, a.cache), a.limit))
        if not a.limit:
            write_result(memo, per_seed[-1])
    table = []
    for i, split in enumerate(CANDIDATES):
        rows = [r["candidates"][i] for r in per_seed]
        table.append(
            {
                "freeze": split,
                "trainable_parameters": rows[0]["trainable_parameters"],
                "validation_percent": mean_se(100 * r["validation"] for r in rows),
                "seconds_per_epoch": mean_se(r["seconds_per_epoch"] for r in rows),
            }
        )
    best = choose(table)
    result = {
        "arch": ARCH,
        "image_size": a.size,
        "data": "Caltech-101, the course split without BACKGROUND_Google: 101 classes; validation = 15% of train",
        "machine": machine(),
        "epochs": a.epochs,
        "seeds": a.seeds,
        "rule": RULE,
        "chosen": best["freeze"],
        "candidates": table,
        "per_seed": per_seed,
    }
    out = os.path.join(RESULTS, "pretrained", "tail-choice-{}.json".format(a.size))
    if a.limit:
        out = os.path.join(WORK, "tail-choice-limited.json")
    write_result(out, result)
    lines = [
        "# The default tail of EfficientNet-Lite0, chosen on validation (Caltech-101, {} px)".format(a.size),
        "",
        "Machine: {}. Seeds: {}. {} epochs each, the product's tail recipe; the test split is not read.".format(
            result["machine"], ", ".join(map(str, a.seeds)), a.epochs
        ),
        "",
        "| --freeze | trains | trainable parameters | validation | s / epoch |",
        "|---|---|---:|---:|---:|",
    ]
    what = {
        "blocks.15": "head conv + classifier",
        "blocks.14": "last block + head",
        "blocks.12": "last 3 blocks + head",
    }
    for r in table:
        v = r["validation_percent"]
        lines.append(
            "| {} | {} | {:,} | {:.2f}%{} | {:.1f} |".format(
                r["freeze"], what[r["freeze"]], r["trainable_parameters"], v["mean"],
                "" if v["se"] is None else " ± {:.2f}".format(v["se"]), r["seconds_per_epoch"]["mean"],
            )
        )  # fmt: skip
    lines += ["", "Rule: {}.".format(RULE), "", "Chosen: `--freeze {}`.".format(best["freeze"])]
    with open(out[: -len(".json")] + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
