"""Workstation commands: train, demo (import torch lazily through the toolchain)."""

from __future__ import annotations

import os

import click

from edgetool.runtime.errors import UsageError, require
from edgetool.runtime.options import codec_option

require("torch", "train")  # fail at command lookup, so the CLI names the extra to install

DEFAULT_OUT = "edgetool-out"
_FIELDS = (
    "data",
    "arch",
    "width_mult",
    "epochs",
    "base_init",
    "base_epochs",
    "ft_epochs",
    "ft_lr",
    "qat_epochs",
    "delta_budget",
    "qat_weight_grad",
    "batch",
    "image_size",
    "pad",
    "seed",
    "limit_train",
    "limit_test",
)


def _default(name):
    from dataclasses import fields

    from .pipeline import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig)}[name]


def config_options(f):
    """The training flags; each defaults to the run's config.json (when resuming) or TrainConfig."""

    def opt(flag, kind, text, **kw):
        key = flag.lstrip("-").replace("-", "_")
        default = _default(key) if key in _FIELDS else None
        shown = "" if default is None else " [default: {}]".format(default)
        return click.option(flag, default=None, type=kind, help=text + shown, **kw)

    opts = [
        opt("--data", str, "'sample' (shipped), an IDX folder, or an ImageFolder root with train/ and test/."),
        click.option("--hierarchy", default=None, type=click.Path(), help="Hierarchy JSON file."),
        click.option(
            "--config", "config_file", default=None, type=click.Path(), help="JSON config file; flags override it."
        ),
        opt("--arch", str, "Model: resnet8, resnet14, resnet20, resnet18-cifar, resnet18, resnet34, resnet50."),
        opt("--width-mult", float, "Channel width multiplier."),
        opt("--epochs", int, "Epochs of the flat network (and of the superclass network with --base-init scratch)."),
        opt(
            "--base-init",
            click.Choice(["flat", "scratch"]),
            "Superclass (base) network: from the flat network's fine-label trunk, or from scratch (or --pretrained).",
        ),
        opt("--base-epochs", int, "Superclass epochs from the flat trunk."),
        opt("--ft-epochs", int, "Epochs of every subclass fine-tune (vanilla fp32 and QAT int8 share one recipe)."),
        opt("--ft-lr", float, "Learning rate of every subclass fine-tune."),
        opt("--qat-epochs", int, "QAT epochs of the superclass network."),
        opt(
            "--delta-budget",
            str,
            "Delta budget: proximal threshold tau toward the base (0 = dense; larger = fewer changed int8 codes), "
            "gridM (code moves rounded to multiples of M, e.g. grid8), a share of weights that may move "
            "(e.g. 30%), or 'patch' (only BatchNorm scale/bias and the head change).",
        ),
        opt(
            "--qat-weight-grad",
            click.Choice(["clip", "ste"]),
            "QAT weight gradient beyond +-127 codes: none (clip) or straight through (ste).",
        ),
        opt("--batch", int, "Batch size."),
        opt("--image-size", int, "Resize ImageFolder images to this size."),
        opt("--pad", int, "Random-crop padding for augmentation (4 for CIFAR)."),
        opt("--seed", int, "Random seed."),
        opt("--limit-train", int, "Use at most this many training images (0 = all)."),
        opt("--limit-test", int, "Use at most this many test images (0 = all)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def make_config(config_file=None, **flags):
    from .pipeline import TrainConfig

    cfg = TrainConfig.load(config_file) if config_file else TrainConfig()
    for k, v in flags.items():
        if v is not None:
            setattr(cfg, k, v)
    cfg.check(config_file or "config")
    for k in ("batch", "epochs", "base_epochs", "ft_epochs", "qat_epochs"):
        if getattr(cfg, k) < 1:
            raise UsageError("--{} must be >= 1, got {}".format(k.replace("_", "-"), getattr(cfg, k)))
    from .qat import parse_budget

    try:
        parse_budget(cfg.delta_budget)
    except ValueError as e:
        raise UsageError(str(e))
    return cfg


MODES = ("flat", "superclass", "vanilla", "qat")


@click.command()
@click.argument("run_dir", type=click.Path())
@config_options
@click.option(
    "--modes",
    default=",".join(MODES),
    show_default=True,
    help="Comma-separated networks to train: flat (the lower bound, and the base's trunk); superclass (the "
    "base network); vanilla (fp32 subclass networks fine-tuned from the base: vanilla Super-Sub and, "
    "given the true superclass, the upper bound); qat (QAT base and QAT subclass networks under the "
    "delta budget: efficient Super-Sub).",
)
@click.option(
    "--pretrained", default=None, type=click.Path(), help="torchvision ResNet state_dict to start float networks from."
)
def train(run_dir, modes, pretrained, config_file, **flags):
    """Train the networks of a Super-Sub run into RUN_DIR (resumes where it stopped).

    Works under torchrun for several processes (DDP, gloo on CPU or nccl on GPUs).
    """
    from .pipeline import Run

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    chosen = ["vanilla" if m == "finetune" else m for m in chosen]
    bad = [m for m in chosen if m not in MODES]
    if bad or not chosen:
        raise UsageError("unknown mode(s) {}; choose from {}".format(", ".join(bad) or "(none)", ", ".join(MODES)))
    cfg_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(cfg_path) and config_file is None and all(v is None for v in flags.values()) and not pretrained:
        config_file = cfg_path
    cfg = make_config(config_file, pretrained=pretrained, **flags)
    run = Run.open(run_dir, cfg)
    N = run.hier.n_super
    if "flat" in chosen:
        run.flat()
    if "superclass" in chosen:
        run.superclass()
    if "vanilla" in chosen:
        for k in range(N):
            run.vanilla(k)
    if "qat" in chosen:
        run.super_qat()
        for k in range(N):
            run.sub_qat(k)
    from .train import is_main

    if is_main():
        click.echo("trained ({}): {}".format(", ".join(chosen), run_dir))


@click.command()
@click.option("--out", default=DEFAULT_OUT, show_default=True, type=click.Path(), help="Output folder.")
@codec_option
@click.option("--fresh", is_flag=True, help="Retrain even if the output folder holds a finished run.")
@config_options
def demo(out, codec, fresh, config_file, **flags):
    """Train, export and run Super-Sub on the shipped Fashion-MNIST sample, offline.

    Prints accuracy (lower bound: flat; control; upper bound; vanilla fp32 Super-Sub;
    efficient int8 Super-Sub through the runtime), where the efficient result sits between the
    bounds, routing, storage x, and switch latency; leaves the bundle and results.json in --out.
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
@click.option(
    "--bundle",
    default=None,
    type=click.Path(),
    help="Measure the efficient Super-Sub through the runtime on this bundle "
    "(default: export one to a temporary folder).",
)
@click.option("--out", default=None, type=click.Path(), help="Report folder (default: RUN_DIR/report).")
def evaluate(run_dir, bundle, out):
    """Report (Markdown, HTML, JSON, PNG plots): bounds, control, vanilla vs efficient, routing, deltas, storage x."""
    from .evaluate import evaluate as run_eval
    from .pipeline import Run

    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise UsageError("{}: not a training run (no config.json); run `edgetool train` first".format(run_dir))
    run = Run.open(run_dir, progress=True)
    out = out or os.path.join(run_dir, "report")
    rep = run_eval(run, bundle, out)
    click.echo(summary_line(rep))
    click.echo("report: {}".format(os.path.join(out, "report.html")))


def summary_line(rep: dict) -> str:
    a, g = rep["accuracy"], rep["gap_closed"]

    def gap(key):
        v = g[key]["value"]
        return "n/a: bounds tie" if v is None else "{:.0%}".format(v)

    return (
        "lower {:.2%}  control {:.2%}  upper {:.2%}  vanilla {:.2%} (gap closed {})  "
        "efficient {:.2%} (gap closed {}), x = {:.3f}"
    ).format(
        a["lower"],
        a["control"],
        a["upper"],
        a["vanilla"],
        gap("vanilla"),
        a["efficient"],
        gap("efficient"),
        rep["x"]["mean"],
    )
