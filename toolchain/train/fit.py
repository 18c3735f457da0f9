"""Training loops: float networks (flat, superclass, vanilla subclass) and QAT fine-tunes."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from edgetool.runtime.preprocess import normalize

from . import device as devices
from ..data.folders import ArrayDataset


def dist_info():
    """(rank, world size); (0, 1) outside torchrun."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Join the torchrun process group (gloo on CPU, nccl on GPUs) when WORLD_SIZE > 1."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_available() and dist.is_initialized()
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def is_main() -> bool:
    return dist_info()[0] == 0


def to_tensor(ds: ArrayDataset, mean, std) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW, by the device's own :func:`~edgetool.runtime.preprocess.normalize`."""
    return torch.from_numpy(preprocess_numpy(ds.images, mean, std))


def preprocess_numpy(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 NHWC -> normalised float32 NCHW, as the device normalises (bundle samples, runtime evaluation)."""
    return normalize(np.asarray(images), {"mean": list(mean), "std": list(std)})


def augment(x: torch.Tensor, gen: torch.Generator, flip=True, pad=0) -> torch.Tensor:
    if flip:
        m = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(m.reshape(-1, 1, 1, 1), x.flip(3), x)
    if pad:
        h, w = x.shape[2:]
        xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        i, j = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
        x = xp[:, :, i : i + h, j : j + w]
    return x


@dataclass(frozen=True)
class Recipe:
    """How a network trains: epochs, optimizer (AdamW, or SGD with momentum), cosine schedule, batch, augmentation."""

    epochs: int
    lr: float
    batch: int = 128
    weight_decay: float = 5e-4
    optimizer: str = "adamw"
    aug: Optional[dict] = None  # {"flip": bool, "pad": int}


@dataclass
class FitHooks:
    """How a fit reports, resumes and steps: none of it changes what the network learns without them.

    *checkpoint*: the model, optimizer and scheduler are saved there after every epoch, and an
    interrupted fit resumes from the last finished epoch.  *on_epoch(epoch)* runs after each
    epoch; *after_step(lr)* after every optimizer step with that step's learning rate (the
    proximal delta budget).
    """

    desc: str = "train"
    progress: bool = True
    checkpoint: Optional[str] = None
    on_epoch: Optional[Callable[[int], None]] = None
    after_step: Optional[Callable[[float], None]] = None


def fit(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    n_valid: Optional[int] = None,
    seed: int = 0,
    hooks: Optional[FitHooks] = None,
) -> dict:
    """Train *model* on (*x*, *y*) by *recipe*; *n_valid* masks head logits beyond the first n.

    Only parameters with ``requires_grad`` train.  Under torchrun, the model is wrapped in
    DistributedDataParallel and each process trains on its shard of every epoch's permutation.
    """
    from .progress import FitProgress

    hooks = hooks or FitHooks()
    dev = devices.current()
    model.to(dev)  # before the optimizer, so its state lives with the parameters
    opt = _optimizer(model, recipe)
    steps_per_epoch = max(1, math.ceil(len(y) / recipe.batch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _Cosine(recipe.epochs * steps_per_epoch))
    start_epoch = _resume(hooks.checkpoint, model, opt, sched)
    rank, world = dist_info()
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        steps_per_epoch = max(1, (len(y) // world) // recipe.batch)
    history: Dict[str, List[float]] = {"loss": [], "accuracy": []}
    bar = FitProgress(hooks.desc, recipe.epochs, start_epoch, steps_per_epoch, hooks.progress and rank == 0)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(start_epoch, recipe.epochs):
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        if world > 1:  # equal shards, so every process runs the same number of steps
            perm = perm[: (len(y) // world) * world][rank::world]
        step = _Step(net, opt, sched, n_valid, hooks.after_step)
        model.train()
        t0 = time.perf_counter()
        for b in range(steps_per_epoch):
            idx = perm[b * recipe.batch : (b + 1) * recipe.batch]
            xb = augment(x[idx], gen, **recipe.aug) if recipe.aug else x[idx]  # on the CPU: same draws anywhere
            bar.step(epoch, step(xb.to(dev, non_blocking=True), y[idx].to(dev)))
        history["loss"].append(step.total / steps_per_epoch)
        history["accuracy"].append(step.correct / max(1, step.seen))
        bar.epoch_done(epoch + 1, history["loss"][-1], history["accuracy"][-1], time.perf_counter() - t0)
        if hooks.checkpoint and rank == 0:
            _save_checkpoint(hooks.checkpoint, model, opt, sched, epoch + 1)
        if hooks.on_epoch is not None:
            hooks.on_epoch(epoch + 1)
    bar.close()
    model.to("cpu")
    model.eval()
    return history


def _optimizer(model, recipe: Recipe):
    """The recipe's optimizer over the parameters that train (``requires_grad``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


class _Cosine:
    """Cosine decay to 0 over *total* steps (a class, so LambdaLR's state_dict can hold it)."""

    def __init__(self, total: int):
        self.total = total

    def __call__(self, s: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(s, self.total) / self.total))


class _Step:
    """One optimizer step; keeps the epoch's running loss."""

    def __init__(self, net, opt, sched, n_valid, after_step):
        self.net, self.opt, self.sched, self.n_valid, self.after_step = net, opt, sched, n_valid, after_step
        self.total = 0.0
        self.correct = self.seen = 0

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        out = self.net(xb)
        if self.n_valid is not None:
            out = out[:, : self.n_valid]
        loss = fit_loss(out, yb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.after_step is not None:
            self.after_step(self.opt.param_groups[0]["lr"])
        self.sched.step()
        value = loss.item()
        self.total += value
        inside = yb >= 0
        self.correct += int((out.detach()[inside].argmax(1) == yb[inside]).sum())
        self.seen += int(inside.sum())
        return value


OUTLIER = -1  # the label of an outlier-exposure image: trained toward a uniform output over the valid logits
OUTLIER_WEIGHT = 0.5  # lambda of Hendrycks et al. (2019), Deep Anomaly Detection with Outlier Exposure


def outlier_count(own: int, pool: int, ratio: float) -> int:
    """How many outlier images :func:`with_outliers` adds to *own* images from a pool of *pool*."""
    return min(pool, int(round(ratio * own))) if ratio > 0 else 0


def with_outliers(x: torch.Tensor, y: torch.Tensor, images: torch.Tensor, pool: torch.Tensor, ratio: float, seed: int):
    """(x, y) and ``round(ratio x len(y))`` images drawn from ``images[pool]`` without replacement
    (fixed by *seed*), labelled OUTLIER: outlier exposure, so a subclass network learns to be
    unsure on images that are not its own and gated top-k routing can tell a wrong route."""
    if ratio <= 0:
        return x, y
    n = outlier_count(len(y), len(pool), ratio)
    pick = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]]
    return torch.cat([x, images[pick]]), torch.cat([y, torch.full((n,), OUTLIER, dtype=y.dtype)])


def not_mine_labels(y: torch.Tensor, n: int) -> torch.Tensor:
    """*y* with each OUTLIER label replaced by *n*: the "not mine" row after a network's n classes."""
    return torch.where(y == OUTLIER, torch.full_like(y, n), y)


def fit_loss(out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the labelled images, plus OUTLIER_WEIGHT x the cross-entropy to the
    uniform distribution on the images labelled OUTLIER (each part a mean over its images)."""
    outlier = yb == OUTLIER
    if not bool(outlier.any()):
        return F.cross_entropy(out, yb)
    loss = -OUTLIER_WEIGHT * F.log_softmax(out[outlier], 1).mean()
    if bool((~outlier).any()):
        loss = loss + F.cross_entropy(out[~outlier], yb[~outlier])
    return loss


def _save_checkpoint(path: str, model, opt, sched, epoch: int) -> None:
    from .checkpoints import save_checkpoint

    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    save_checkpoint(dict(state, epoch=epoch), path)


def _resume(path: Optional[str], model, opt, sched) -> int:
    """Load an epoch checkpoint (model, optimizer, scheduler state); the epoch to start from."""
    if not path or not os.path.isfile(path):
        return 0
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    return int(ck["epoch"])


@torch.no_grad()
def predict_logits(model, x: torch.Tensor, n_valid: Optional[int] = None, batch: int = 512, features: bool = False):
    """Logits of *model* on *x* (on the CPU), computed on the selected device; with *features*
    (a :class:`~edgetool.toolchain.train.qat.QATNet`), (logits, its pooled features)."""
    dev = devices.current()
    model.to(dev)
    model.eval()
    outs, feats = [], []
    try:
        for i in range(0, len(x), batch):
            o = model(x[i : i + batch].to(dev), features=True) if features else model(x[i : i + batch].to(dev))
            if features:
                o, f = o
                feats.append(f.detach().cpu())
            outs.append((o[:, :n_valid] if n_valid is not None else o).cpu())
    finally:
        model.to("cpu")
    logits = torch.cat(outs) if outs else torch.zeros(0)
    return (logits, torch.cat(feats) if feats else torch.zeros(0)) if features else logits


def accuracy(pred, y) -> float:
    pred = np.asarray(pred)
    y = np.asarray(y)
    return float((pred == y).mean()) if len(y) else float("nan")
