"""Workstation commands: train, demo (import torch lazily through the toolchain)."""
from __future__ import annotations

import json
import os
import platform
import time

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
        click.option("--seed", default=None, type=int, help="Random seed."),
        click.option("--limit-train", default=None, type=int, help="Use at most this many training images."),
        click.option("--limit-test", default=None, type=int, help="Use at most this many test images."),
        click.option("--delta-l1", default=None, type=float,
                     help="L1 pull of the QAT subclass fine-tunes toward the base weights (smaller deltas)."),
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


@click.command()
@click.argument("run_dir", type=click.Path())
@config_options
@click.option("--no-flat", is_flag=True, help="Skip the flat lower-bound network.")
@click.option("--no-vanilla", is_flag=True, help="Skip the vanilla fp32 subclass networks.")
def train(run_dir, no_flat, no_vanilla, config_file, **flags):
    """Train every network of a Super-Sub run into RUN_DIR (resumes where it stopped)."""
    from .pipeline import Run

    cfg_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(cfg_path) and config_file is None and all(v is None for v in flags.values()):
        config_file = cfg_path
    cfg = make_config(config_file, **flags)
    run = Run(run_dir, cfg)
    run.train_all(with_flat=not no_flat, with_vanilla=not no_vanilla)
    click.echo("trained: {}".format(run_dir))


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
