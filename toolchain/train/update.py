"""Training an update: ``edgetool train NEW --update-of DEPLOYED_RUN``.

The new run takes the deployed run's settings (the flags given now on top: more images, another
data folder) and continues from the deployed run's int8 networks instead of training from scratch.
Their weight and activation scales are buffers that nothing trains, so they stay frozen and the
new networks share the deployed graph and int8 grid; ``edgetool export NEW --update-of BUNDLE``
then ships only an exact delta.  The delta budget (``--delta-budget``: a proximal step, a share of
weights, a grid or a patch, :mod:`.delta_budget`) pulls every weight toward the deployed one, so a
retrain stays a small delta.

* A pretrained-backbone run: the tail's QAT continues on the new run's cached trunk outputs; the
  trunk is frozen, so only the tail's tensors change.
* A Super-Sub run: the base network's QAT continues on the new data, toward the deployed base;
  each subclass network continues from the deployed one, toward the new base (as every subclass
  fine-tune does).  Only the int8 networks train (the flat and fp32 networks are not shipped).
"""

from __future__ import annotations

import copy
import math
import os
import time
from typing import TYPE_CHECKING, Callable

import torch

from edgetool.runtime.errors import UsageError

from . import delta_budget, qat
from . import fit as training
from .checkpoints import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from .run_data import TrainConfig


def needs(cfg, path: str) -> list:
    """The checkpoints of the deployed run at *path* that an update of it starts from."""
    from .models import is_edge_backbone

    if is_edge_backbone(cfg.arch):
        return ["int8.pt"]
    return ["super_qat.pt", "qat"]


def start_update(old_path: str, new_path: str, make_config: Callable) -> "TrainConfig":
    """``train NEW --update-of OLD``: NEW's settings (OLD's, the flags given on top; NEW's own when it
    is resumed) with ``update_of`` set; refused where OLD has not trained the int8 networks."""
    import click

    from .run_data import TrainConfig

    old_path = os.path.abspath(old_path)
    cpath = os.path.join(old_path, "config.json")
    if not os.path.isfile(cpath):
        raise UsageError("--update-of {}: not a training run (no config.json)".format(old_path))
    new_cfg = os.path.join(new_path, "config.json")
    if os.path.isfile(new_cfg):
        cfg = make_config(new_cfg)
        if cfg.update_of != old_path:
            raise UsageError("{}: already a run, not an update of {}; give a new folder".format(new_path, old_path))
        return cfg
    cfg = make_config(cpath)
    missing = [f for f in needs(TrainConfig.load(cpath), old_path) if not os.path.exists(os.path.join(old_path, f))]
    if missing:
        raise UsageError(
            "--update-of {}: missing {}; train its int8 networks first".format(old_path, ", ".join(missing))
        )
    cfg.update_of = old_path
    click.echo("update of {}: its int8 networks continue on this run's data, scales frozen, delta budget {}".format(
        old_path, cfg.delta_budget), err=True)  # fmt: skip
    return cfg


def deployed(run, *parts) -> qat.QATNet:
    """A network of the run *run* updates (``update_of``): its weights and frozen scales."""
    return qat.QATNet.from_state(load_checkpoint(os.path.join(str(run.cfg.update_of), *parts)))


def update_base(run, labels: torch.Tensor) -> qat.QATNet:
    """The base network of a Super-Sub update: the deployed run's, trained on *run*'s data with its
    scales frozen (QAT's recipe), under the delta budget toward the deployed weights."""
    net, old = deployed(run, "super_qat.pt"), deployed(run, "super_qat.pt")
    net.weight_grad = run.cfg.qat_weight_grad
    epochs = max(1, run.cfg.qat_epochs)
    step = delta_budget.apply_budget(
        net, old, run.cfg.budget(), epochs * max(1, math.ceil(len(labels) / run.cfg.batch))
    )
    recipe = run.recipe(epochs, run.cfg.qat_lr / 2, weight_decay=0.0)
    hooks = run.hooks("QAT superclass network (update)", after_step=step)
    training.fit(net, run.xtr, labels, recipe, n_valid=run.hier.n_super, seed=run.cfg.seed, hooks=hooks)
    return net


def update_tail(run) -> qat.QATNet:
    """A pretrained-backbone run's int8 network as an update (``int8.pt``): the deployed run's, its
    tail's QAT continued on *run*'s cached trunk outputs under the delta budget toward the deployed
    tail; the trunk is not touched."""
    from . import efficientnet as E
    from .tail import accuracy, copy_weights, tail_qatnet, train_tail

    t0 = time.perf_counter()
    net = qat.QATNet.from_state(load_checkpoint(os.path.join(str(run.cfg.update_of), "int8.pt")))
    if run.split is None:
        raise UsageError("--update-of: a run that trains its whole network cannot update on cached trunk outputs")
    _, _, boundary = E.split_ops(net.ops, run.split)
    tnet = tail_qatnet(net, boundary)
    ref = copy.deepcopy(tnet)
    cache = run.cache(run.new_model())
    views, xval, xte = run.features(cache)  # the trunk is frozen: the deployed run's
    ytr, yval, yte = run.labels()
    epochs = max(1, run.cfg.qat_epochs)
    steps = epochs * max(1, math.ceil(len(ytr) / run.cfg.batch))
    step = delta_budget.apply_budget(tnet, ref, run.cfg.budget(), steps)
    val = (xval, yval) if len(yval) else None
    hist = train_tail(tnet, views, ytr, val, epochs, run.cfg.tail_lr / 10, run.cfg.batch, run.cfg.seed,
                      "QAT tail (update)", run.progress, weight_decay=0.0, after_step=step)  # fmt: skip
    copy_weights(tnet, net)
    net.eval()
    save_checkpoint(net.state(), run.file("int8.pt"))
    run.timing["int8"] = time.perf_counter() - t0
    hist["update_of"], hist["cache_seconds"] = run.cfg.update_of, cache.seconds  # trunk passes, 0 when cached
    hist["test_accuracy"] = accuracy(tnet, xte, yte)
    run._metrics({"qat": hist})
    return net
