"""Workstation commands: train, demo (import torch lazily through the toolchain)."""
from __future__ import annotations

import os
import platform

import click

from edgetool.runtime.errors import UsageError, require

require("torch", "train")  # fail at command lookup, so the CLI names the extra to install

DEFAULT_OUT = "edgetool-out"


def config_options(f):
    opts = [
        click.option("--data", default=None, help="'sample' (shipped), an IDX folder, or an ImageFolder root with train/ and test/."),
        click.option("--hierarchy", default=None, type=click.Path(), help="Hierarchy JSON file."),
        click.option("--config", "config_file", default=None, type=click.Path(), help="JSON config file; flags override it."),
        click.option("--arch", default=None, help="Model: resnet8, resnet14, resnet20, resnet18-cifar, resnet18, resnet34, resnet50."),
        click.option("--width-mult", default=None, type=float, help="Channel width multiplier."),
        click.option("--epochs", default=None, type=int, help="Epochs of the flat and superclass networks."),
        click.option("--ft-epochs", default=None, type=int, help="Epochs of each vanilla subclass fine-tune."),
        click.option("--qat-epochs", default=None, type=int, help="QAT epochs of the superclass network."),
        click.option("--qat-ft-epochs", default=None, type=int, help="QAT epochs of each subclass fine-tune."),
        click.option("--batch", default=None, type=int, help="Batch size."),
        click.option("--image-size", default=None, type=int, help="Resize ImageFolder images to this size."),
        click.option("--pad", default=None, type=int, help="Random-crop padding for augmentation (4 for CIFAR)."),
        click.option("--seed", default=None, type=int, help="Random seed."),
        click.option("--limit-train", default=None, type=int, help="Use at most this many training images."),
        click.option("--limit-test", default=None, type=int, help="Use at most this many test images."),
        click.option("--delta-l1", default=None, type=float,
                     help="L1 pull of the QAT subclass fine-tunes toward the base weights (smaller deltas)."),
        click.option("--delta-topk", default=None, type=float,
                     help="Keep only this fraction of changed int8 codes per subclass (top-k sparse diff), then re-fine-tune."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def make_config(config_file=None, **flags):
    from .pipeline import TrainConfig

    cfg = TrainConfig.load(config_file) if config_file else TrainConfig()
    if config_file and not os.path.isfile(config_file):
        raise UsageError("{}: no such config file".format(config_file))
    for k, v in flags.items():
        if v is not None:
            setattr(cfg, k, v)
    if cfg.batch < 1 or cfg.epochs < 0:
        raise UsageError("--batch must be >= 1 and epochs >= 0")
    return cfg


MODES = ("flat", "superclass", "oracle", "vanilla", "finetune", "qat")


@click.command()
@click.argument("run_dir", type=click.Path())
@config_options
@click.option("--modes", default="flat,superclass,oracle,finetune,qat", show_default=True,
              help="Comma-separated networks to train: flat (lower bound); superclass; oracle / vanilla "
                   "(subclass networks trained on their superclass only, from scratch or --pretrained: the upper "
                   "bound); finetune (subclass networks fine-tuned from the superclass network); qat (QAT "
                   "superclass network and QAT fine-tuned subclass networks).")
@click.option("--pretrained", default=None, type=click.Path(), help="torchvision ResNet state_dict to start float networks from.")
def train(run_dir, modes, pretrained, config_file, **flags):
    """Train the networks of a Super-Sub run into RUN_DIR (resumes where it stopped).

    Works under torchrun for several processes (DDP, gloo on CPU or nccl on GPUs).
    """
    from .pipeline import Run

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    bad = [m for m in chosen if m not in MODES]
    if bad or not chosen:
        raise UsageError("unknown mode(s) {}; choose from {}".format(", ".join(bad) or "(none)", ", ".join(MODES)))
    cfg_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(cfg_path) and config_file is None and all(v is None for v in flags.values()) and not pretrained:
        config_file = cfg_path
    cfg = make_config(config_file, pretrained=pretrained, **flags)
    run = Run(run_dir, cfg)
    N = run.hier.n_super
    if "flat" in chosen:
        run.flat()
    if "superclass" in chosen:
        run.superclass()
    if "oracle" in chosen or "vanilla" in chosen:
        for k in range(N):
            run.vanilla(k, init="scratch")
    if "finetune" in chosen:
        for k in range(N):
            run.vanilla(k)
    if "qat" in chosen:
        run.super_qat()
        for k in range(N):
            run.sub_qat(k)
    from .train import is_main

    if is_main():
        click.echo("trained ({}): {}".format(", ".join(chosen), run_dir))


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "{} ({} cores), {} {}".format(cpu, os.cpu_count(), platform.system(), platform.release())


@click.command()
@click.option("--out", default=DEFAULT_OUT, show_default=True, type=click.Path(), help="Output folder.")
@click.option("--codec", default="zstd", show_default=True, type=click.Choice(["zstd", "7z"]),
              help="Delta codec (zstd: decodes ~50x faster for ~5% more bytes; see benchmarks/results/switch_latency.json).")
@click.option("--fresh", is_flag=True, help="Retrain even if the output folder holds a finished run.")
@config_options
def demo(out, codec, fresh, config_file, **flags):
    """Train, export and run Super-Sub on the shipped Fashion-MNIST sample, offline.

    Prints accuracy (flat, oracle, vanilla fp32 Super-Sub, efficient int8 Super-Sub via the
    runtime), storage, and switch latency; leaves the bundle and results.json in --out.
    """
    import shutil

    from .demo import run_demo

    run_dir = os.path.join(out, "run")
    if fresh and os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    cfg = make_config(config_file, **flags)
    if cfg.data is None:
        cfg.data = "sample"
    run_demo(out, cfg, codec)


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--bundle", default=None, type=click.Path(), help="Measure the efficient Super-Sub through the runtime on this bundle.")
@click.option("--out", default=None, type=click.Path(), help="Report folder (default: RUN_DIR/report).")
@click.option("--upper", default="auto", show_default=True, type=click.Choice(["auto", "scratch", "finetune"]),
              help="Networks of the upper bound: from-scratch subclass networks (paper) or fine-tuned ones.")
def evaluate(run_dir, bundle, out, upper):
    """Report (Markdown, HTML, JSON, PNG plots): bounds, vanilla vs efficient, deltas, storage."""
    from .evaluate import evaluate as run_eval
    from .pipeline import Run

    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise UsageError("{}: not a training run (no config.json); run `edgetool train` first".format(run_dir))
    run = Run(run_dir, progress=True)
    out = out or os.path.join(run_dir, "report")
    rep = run_eval(run, bundle, out, upper)
    a, h = rep["accuracy"], rep["headline"]
    click.echo("lower {:.2%}  upper {:.2%}  vanilla {:.2%} (gap closed {:.0%})  efficient {:.2%} (gap closed {:.0%})".format(
        a["lower"], a["upper"], a["vanilla"], h["gap_closed_vanilla"], a["efficient"], h["gap_closed_efficient"]))
    click.echo("report: {}".format(os.path.join(out, "report.html")))
