"""Shared by the pretrained-backbone benchmarks (EfficientNet-Lite0 on Caltech-101): the work
folder, running the CLI, each test photo right or wrong through the runtime, and multiply-accumulates."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = os.path.join(ROOT, "edgetool-out", "pretrained-caltech101")
ARCH = "efficientnet-lite0"


def cli(*args, capture=False):
    """Run ``edgetool ARGS`` (this Python); stop the benchmark if it fails; its stdout if *capture*."""
    cmd = [sys.executable, "-m", "edgetool"] + [str(a) for a in args]
    print("$", " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd, capture_output=capture, text=True)
    if proc.returncode != 0:
        raise SystemExit("failed ({}): {}".format(proc.returncode, proc.stderr if capture else ""))
    return proc.stdout if capture else ""


def correct(bundle: str, paths, labels, batch: int = 32):
    """(right or wrong per test photo, specialist runs) through the runtime (ONNX Runtime, int8,
    the batched policy); kept beside the bundle, keyed by its manifest's hash, so a re-run reads it."""
    with open(os.path.join(bundle, "manifest.json"), "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:16]
    memo = "{}-correct-{}.json".format(bundle, key)
    if os.path.isfile(memo):
        with open(memo) as f:
            d = json.load(f)
        return np.array(d["correct"], bool), d["passes"]
    ok, passes = _correct(bundle, paths, labels, batch)
    with open(memo, "w") as f:
        json.dump({"correct": ok.tolist(), "passes": passes}, f)
    return ok, passes


def _correct(bundle: str, paths, labels, batch: int):
    from edgetool.runtime.backends import load_backend
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.classifier import SuperSubClassifier
    from edgetool.runtime.preprocess import load_images

    out = []
    with Bundle.open(bundle) as b:
        clf = SuperSubClassifier(load_backend("onnxruntime", b), policy="batched")
        for i in range(0, len(paths), batch):
            preds = clf.classify(load_images(paths[i : i + batch], b.input))
            out += [p.label == y for p, y in zip(preds, labels[i : i + batch])]
        passes = clf.passes
    return np.array(out), passes


def macs(size: int, tail_from: str = "blocks.15.") -> dict:
    """Multiply-accumulates of EfficientNet-Lite0 at *size* px: the whole network, and its tail
    (the parts from *tail_from* on: the last block, the head convolution and the classifier)."""
    import torch

    from edgetool.toolchain.train import efficientnet as E

    m = E.build(ARCH, 3, 101).eval()
    counts = {}

    def hook(name):
        def f(mod, inp, out):
            if isinstance(mod, torch.nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                counts[name] = counts.get(name, 0) + out.numel() * k
            elif isinstance(mod, torch.nn.Linear):
                counts[name] = counts.get(name, 0) + mod.in_features * mod.out_features

        return f

    for name, mod in m.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            mod.register_forward_hook(hook(name))
    with torch.no_grad():
        m(torch.zeros(1, 3, size, size))
    total = sum(counts.values())
    tail = sum(v for k, v in counts.items() if k.startswith((tail_from, "head.", "fc")))
    return {"network": total, "tail": tail, "two_stage_ratio": (total + tail) / total}
