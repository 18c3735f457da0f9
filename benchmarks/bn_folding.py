#!/usr/bin/env python
"""BatchNorm folded into the int8 weights vs kept as a per-channel float scale/bias.

For one superclass (default: tops, the hardest of the shipped sample), QAT fine-tunes of
the subclass network start from the same QAT superclass network with the same frozen
scales, and are compared on accuracy (its own test images, true superclass given) and
delta size (zstd and 7z, as a fraction of one int8 network). Every variant uses the run's one
subclass fine-tune recipe (optimizer, learning rate, weight decay, epochs, augmentation:
TrainConfig.ft_*), with no delta budget, so the only difference is where BatchNorm lives:

* ``folded``   - BN folded into the conv weights and a float bias, no batch statistics;
* ``bn-kept``  - BN kept as per-channel float scale/bias, batch statistics while training;
* ``vanilla``  - the fp32 fine-tune (no quantization), for reference.

Usage: python benchmarks/bn_folding.py [--superclass tops] [--epochs N (default: the run's ft_epochs)]
"""

import argparse
import copy
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
from common import write_result  # noqa: E402


class FoldedBias(nn.Module):
    """A folded BatchNorm: only a learnable per-channel bias remains (no batch statistics)."""

    def __init__(self, bias):
        super().__init__()
        self.bias = nn.Parameter(bias.clone())

    def forward(self, x):
        return x + self.bias.reshape(1, -1, 1, 1)


def fold(net):
    """A copy of a QATNet with every BN folded into its conv weight (fresh frozen weight scales)."""
    from edgetool.toolchain.train.qat import param_key

    f = copy.deepcopy(net)
    with torch.no_grad():
        for layer in f.layers:
            key = param_key(layer)
            if key not in f.bns:
                continue
            bn = f.bns[key]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            f.weight(layer + ".weight").mul_(scale.reshape(-1, 1, 1, 1))
            f.bns[key] = FoldedBias(bn.bias - bn.running_mean * scale)
    f.init_weight_scales()
    return f


def delta_size(base, sub):
    from edgetool.runtime.bundle import codecs

    from edgetool.toolchain.train.qat import code_delta

    delta = code_delta(base, sub)
    d, n = delta.tobytes(), delta.size
    return {
        "zstd": len(codecs.encode("zstd", d)) / n,
        "7z": len(codecs.encode("7z", d)) / n,
        "changed_codes": float(np.frombuffer(d, np.uint8).astype(bool).mean()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--superclass", default="tops")
    ap.add_argument("--epochs", type=int, default=None, help="default: the run's ft_epochs")
    ap.add_argument(
        "--run", default="edgetool-out/run", help="training run with the superclass networks (trained if absent)"
    )
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bn_folding.json"))
    args = ap.parse_args()

    from edgetool.toolchain.train import fit as T
    from edgetool.runtime.machine import machine_name
    from edgetool.toolchain.train.run import Run, TrainConfig

    cfg_path = os.path.join(args.run, "config.json")
    run = Run.open(args.run, None if os.path.isfile(cfg_path) else TrainConfig(), progress=False)
    k = run.hier.superclasses.index(args.superclass)
    n = len(run.hier.subclasses[k])
    mask = run.sub_mask(k)
    xs, ys = run.xtr[mask], torch.from_numpy(run.loc_of)[run.ytr[mask]]
    y = run.yte.numpy()
    idx = np.nonzero(run.sup_of[y] == k)[0]
    yt = run.loc_of[y[idx]]
    base = run.super_qat()

    def acc(m):
        return float((T.predict_logits(m, run.xte[idx], n).argmax(1).numpy() == yt).mean())

    rows = {}
    c = run.cfg
    epochs = args.epochs or c.ft_epochs
    for name in ("folded", "bn-kept", "vanilla"):
        t0 = time.perf_counter()
        if name == "vanilla":
            m = copy.deepcopy(run.superclass())
            start = None
        else:
            start = fold(base) if name == "folded" else base
            m = copy.deepcopy(start)
        recipe = run.recipe(epochs, c.ft_lr, c.ft_weight_decay)
        T.fit(m, xs, ys, recipe, n_valid=n, seed=c.seed + k + 1, hooks=T.FitHooks(progress=False))
        row = {"accuracy": acc(m), "seconds": time.perf_counter() - t0}
        if start is not None:
            row["delta"] = delta_size(start, m)
        rows[name] = row
        print(name, json.dumps(row))
    result = {
        "benchmark": "bn_folding",
        "machine": machine_name(),
        "superclass": args.superclass,
        "recipe": {"optimizer": "adamw", "lr": c.ft_lr, "weight_decay": c.ft_weight_decay, "epochs": epochs},
        "test_images": int(len(idx)),
        "recipes": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
