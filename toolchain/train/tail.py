"""Training a network's tail on cached trunk outputs (:mod:`.trunk_cache`), in float and as int8
QAT: the trunk frozen (no gradient, BatchNorm in eval form), AdamW without weight decay on
BatchNorm and biases, each image as itself or its mirror, the epoch of the best validation
accuracy kept."""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import efficientnet as E
from . import qat


class Tail(nn.Module):
    """The layers of a network after its split, on cached trunk outputs.  ``train()`` puts only
    these layers into training mode: the trunk's BatchNorm keeps its eval form."""

    def __init__(self, model: E.EfficientNetLite, split: str):
        super().__init__()
        self.model, self.split = model, split
        self.parts = model.tail_modules(split)

    def train(self, mode: bool = True):
        self.training = mode
        for p in self.parts:
            p.train(mode)
        return self

    def forward(self, x):
        return self.model.tail_forward(x, self.split)


def freeze_trunk(model: E.EfficientNetLite, split: Optional[str]) -> None:
    """No gradient for the trunk's parameters; the tail's train."""
    for p in model.parameters():
        p.requires_grad_(True)
    if split is None:
        return
    names = model.part_names()
    for name, m in model.parts():
        if names.index(name) <= names.index(split):
            for p in m.parameters():
                p.requires_grad_(False)


def param_groups(module: nn.Module, weight_decay: float):
    """AdamW groups: weight decay on convolution and linear weights only (not on BatchNorm or biases)."""
    decay = [p for p in module.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in module.parameters() if p.requires_grad and p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def train_tail(
    net: nn.Module,
    feats: Sequence[torch.Tensor],
    y: torch.Tensor,
    val: Optional[Tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    desc: str,
    progress: bool,
    weight_decay: float = 1e-4,
    after_step=None,
) -> dict:
    """Train *net* on cached trunk outputs: each step takes every image in one of its *feats* views (the
    image, its mirror), drawn at random; then *after_step(lr)* (a delta budget).  With *val*, the epoch
    of the best validation accuracy is kept.  Returns the history."""
    from .progress import FitProgress

    opt = torch.optim.AdamW(param_groups(net, weight_decay), lr=lr)
    steps = max(1, math.ceil(len(y) / batch))
    total = epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(seed)
    bar = FitProgress(desc, epochs, 0, steps, progress)
    hist: Dict[str, Any] = {"loss": [], "train_accuracy": [], "val_accuracy": []}
    best, best_acc = None, -1.0
    for epoch in range(epochs):
        net.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(y), generator=gen)
        view = torch.randint(0, len(feats), (len(y),), generator=gen)
        loss_sum, correct = 0.0, 0
        for b in range(steps):
            idx = perm[b * batch : (b + 1) * batch]
            xb = feats[0][idx]
            if len(feats) > 1:  # each image as itself or as its mirror
                xb = torch.where((view[idx] == 1).reshape(-1, 1, 1, 1), feats[1][idx], xb)
            loss = F.cross_entropy(out := net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            (after_step or _no_step)(opt.param_groups[0]["lr"])
            sched.step()
            loss_sum, correct = loss_sum + float(loss.detach()), correct + int((out.detach().argmax(1) == y[idx]).sum())
            bar.step(epoch, float(loss.detach()))
        hist["loss"].append(loss_sum / steps)
        hist["train_accuracy"].append(correct / len(y))
        if val is not None:
            acc = accuracy(net, *val)
            hist["val_accuracy"].append(acc)
            if acc > best_acc:
                best, best_acc = copy.deepcopy(net.state_dict()), acc
        bar.epoch_done(epoch + 1, hist["loss"][-1], hist["train_accuracy"][-1], time.perf_counter() - t0)
    bar.close()
    if best is not None:
        net.load_state_dict(best)
    hist["kept_epoch"] = int(np.argmax(hist["val_accuracy"])) + 1 if best is not None else epochs
    net.eval()
    return hist


def _no_step(lr: float) -> None:
    """No delta budget: nothing after a step."""


@torch.no_grad()
def logits_of(net: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else torch.zeros(0)


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits_of(net, x).argmax(1) == y).float().mean()) if len(y) else float("nan")


# -- the int8 network ------------------------------------------------------------------------------
def tail_qatnet(full: qat.QATNet, boundary: str) -> qat.QATNet:
    """A QATNet of *full*'s ops after tensor *boundary* (renamed ``input``), sharing its settings."""
    start = next(i for i, op in enumerate(full.ops) if op.get("y") == boundary) + 1
    tail_ops = copy.deepcopy(full.ops[start:])
    for op in tail_ops:
        for key in ("x", "a", "b"):
            if op.get(key) == boundary:
                op[key] = "input"
    tensors = named_tensors(full)
    net = qat.QATNet(tail_ops, tensors, full.config)
    copy_scales(full, net, {boundary: "input"})
    net.quantize = True
    return net


def named_tensors(net: qat.QATNet) -> Dict[str, torch.Tensor]:
    """The raw tensors a QATNet was built from (conv weights and BatchNorm states, fc), by IR name."""
    sd = net.state_dict()
    out = {}
    for op in net.ops:
        if op["op"] == "conv":
            out[op["name"] + ".weight"] = sd["params." + qat.param_key(op["name"] + ".weight")]
            for k in ("weight", "bias", "running_mean", "running_var"):
                out["{}.bn.{}".format(op["name"], k)] = sd["bns.{}.{}".format(qat.param_key(op["name"]), k)]
        elif op["op"] == "fc":
            for k in ("weight", "bias"):
                out["{}.{}".format(op["name"], k)] = sd["params." + qat.param_key("{}.{}".format(op["name"], k))]
    return out


@torch.no_grad()
def copy_scales(src: qat.QATNet, dst: qat.QATNet, renamed: Dict[str, str]) -> None:
    """Weight and activation scales of *src*'s layers and tensors into *dst* (tensor names mapped by *renamed*)."""
    for layer in dst.layers:
        dst.wscale(layer).copy_(src.wscale(layer))
    back = {v: k for k, v in renamed.items()}
    for t in dst.act_tensors:
        dst.ascale(t).copy_(src.ascale(back.get(t, t)))


@torch.no_grad()
def copy_weights(src: qat.QATNet, dst: qat.QATNet) -> None:
    """The parameters and BatchNorm states of *src*'s layers into the same layers of *dst*."""
    dsd = dst.state_dict()
    for k, v in src.state_dict().items():
        if k.startswith(("params.", "bns.")) and k in dsd:
            dsd[k].copy_(v)
