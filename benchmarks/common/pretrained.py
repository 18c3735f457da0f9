"""Shared by the pretrained-backbone benchmarks (EfficientNet-Lite0 on Caltech-101, or CIFAR-10
upscaled): the dataset and its work folder, running the CLI, each test photo right or wrong through
the runtime, and multiply-accumulates."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCH = "efficientnet-lite0"


@dataclass(frozen=True)
class Dataset:
    """One dataset of the pretrained benchmarks: its photos, input size, controls and folders."""

    name: str
    title: str
    data: str  # the sentence the results give for the data
    size: int  # the base's input size (px)
    cost_size: int  # the equal-inference-cost control's input size (px)
    classes: int
    superclasses: int  # tail specialists' k-means superclasses
    specialists: str  # results folder names under benchmarks/results/pretrained/
    verdict: str

    @property
    def work(self) -> str:
        return os.path.join(ROOT, "edgetool-out", "pretrained-" + self.name)

    def data_dir(self) -> str:
        """The photos' train/ and test/ folder, made (linked) once per process."""
        if self.name not in _DATA:
            from common.data import caltech_dir, cifar10_subset

            if self.name == "cifar10":
                _DATA[self.name] = cifar10_subset(self.work, CIFAR_TRAIN, CIFAR_TEST)
            else:
                _DATA[self.name] = caltech_dir(self.work, background=False)[0]
        return _DATA[self.name]


_DATA: dict = {}

CIFAR_TRAIN, CIFAR_TEST = 10000, 3000
DATASETS = {
    "caltech101": Dataset(
        "caltech101", "Caltech-101",
        "Caltech-101, the course split without BACKGROUND_Google: 101 classes, 15% of train held out",
        224, 240, 101, 10, "specialists-224", "verdict-224",
    ),
    "cifar10": Dataset(
        "cifar10", "CIFAR-10 (32 px photos upscaled)",
        "CIFAR-10 upscaled to 128 px: the first {} training and {} test photos of the official split, "
        "balanced over its 10 classes; 15% of train held out".format(CIFAR_TRAIN, CIFAR_TEST),
        128, 144, 10, 4, "specialists-cifar10-128", "verdict-cifar10-128",
    ),
}  # fmt: skip
DS = DATASETS["caltech101"]
WORK = DS.work


def use(name: str) -> Dataset:
    """Make *name* the dataset of this benchmark run (``DS`` and ``WORK``, read as ``P.DS``)."""
    global DS, WORK
    DS = DATASETS[name]
    WORK = DS.work
    os.makedirs(WORK, exist_ok=True)
    return DS


def add_dataset_option(ap) -> None:
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="caltech101", help="(default: caltech101)")


def flat_controls() -> dict:
    """The flat controls of this dataset at equal training budget and at (at least) the two-stage
    inference cost, as ``benchmarks/pretrained_verdict.py`` measured them (its summary)."""
    from common import RESULTS

    path = os.path.join(RESULTS, "pretrained", DS.verdict, "summary.json")
    if not os.path.isfile(path):
        return {"missing": "run benchmarks/pretrained_verdict.py: it trains the flat controls"}
    with open(path) as f:
        v = json.load(f)
    keys = ("flat_budget", "flat_cost")
    return {
        "source": "benchmarks/results/pretrained/{}/summary.json".format(DS.verdict),
        "seeds": v["seeds"],
        "training": {k: v["training"][k] for k in keys},
        "test_percent": {k: v["test_percent"][k] for k in keys},
        "macs_per_image_relative": {k: v["macs_per_image_relative"][k] for k in keys},
        "best_control": v["best_control"],
        "with_specialists_minus_control": v["efficient_minus"],
    }


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


def macs(size: int, tail_from: str = "blocks.15.", classes: int = 0) -> dict:
    """Multiply-accumulates of EfficientNet-Lite0 at *size* px over *classes* (default: the
    dataset's): the whole network, and its tail (the parts from *tail_from* on: the last block, the
    head convolution and the classifier)."""
    import torch

    from edgetool.toolchain.train import efficientnet as E

    m = E.build(ARCH, 3, classes or DS.classes).eval()
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
