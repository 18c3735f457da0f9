"""Training loops: float networks (flat, superclass, vanilla subclass) and QAT fine-tunes."""
from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .data import ArrayDataset


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


def set_threads() -> None:
    n = int(os.environ.get("EDGETOOL_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(n)


def to_tensor(ds: ArrayDataset, mean, std) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW."""
    x = torch.from_numpy(np.ascontiguousarray(ds.images).copy()).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).contiguous()


def preprocess_numpy(images: np.ndarray, mean, std) -> np.ndarray:
    """Same as :func:`to_tensor` in numpy (used for bundle samples and runtime evaluation)."""
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def augment(x: torch.Tensor, gen: torch.Generator, flip=True, pad=0) -> torch.Tensor:
    if flip:
        m = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(m.reshape(-1, 1, 1, 1), x.flip(3), x)
    if pad:
        h, w = x.shape[2:]
        xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        i, j = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
        x = xp[:, :, i:i + h, j:j + w]
    return x


def fit(model, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch: int = 128,
        n_valid: Optional[int] = None, weight_decay: float = 5e-4, seed: int = 0, desc: str = "train",
        aug: Optional[dict] = None, progress: bool = True,
        start_epoch: int = 0, on_epoch=None, optimizer: str = "adamw", checkpoint: Optional[str] = None,
        after_step=None) -> dict:
    """Train with AdamW (or SGD with momentum) and a cosine schedule; *n_valid* masks head logits beyond the first n.

    Only parameters with ``requires_grad`` train.  *after_step(lr)* is called after every
    optimizer step with that step's learning rate (the proximal delta budget).
    *on_epoch(epoch)* is called after each epoch
    (checkpointing).  With *checkpoint*, the model, optimizer and schedule are saved after
    every epoch and an interrupted fit resumes from the last finished epoch.  Under
    torchrun, the model is wrapped in DistributedDataParallel and each process trains on
    its shard of every epoch's permutation.
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(y) / batch))
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    if checkpoint and os.path.isfile(checkpoint):
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch = int(ck["epoch"])
    for _ in range(start_epoch * steps_per_epoch):
        sched.step()
    rank, world = dist_info()
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model)
        steps_per_epoch = max(1, (len(y) // world) // batch)
    aug = aug or {}
    history = {"loss": []}
    bar = tqdm(total=(epochs - start_epoch) * steps_per_epoch, desc=desc,
               disable=None if (progress and rank == 0) else True, leave=False,
               unit="step", dynamic_ncols=True)
    for epoch in range(start_epoch, epochs):
        model.train()
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        perm = torch.randperm(len(y), generator=g)
        if world > 1:  # equal shards, so every process runs the same number of steps
            perm = perm[: (len(y) // world) * world][rank::world]
        running = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * batch:(b + 1) * batch]
            xb = augment(x[idx], gen, **aug) if aug else x[idx]
            out = net(xb)
            if n_valid is not None:
                out = out[:, :n_valid]
            loss = F.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(opt.param_groups[0]["lr"])
            sched.step()
            running += loss.item()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss="{:.3f}".format(loss.item()))
        history["loss"].append(running / steps_per_epoch)
        if checkpoint and rank == 0:
            tmp = checkpoint + ".tmp"
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1}, tmp)
            os.replace(tmp, checkpoint)
        if on_epoch is not None:
            on_epoch(epoch + 1)
    bar.close()
    model.eval()
    return history


@torch.no_grad()
def predict_logits(model, x: torch.Tensor, n_valid: Optional[int] = None, batch: int = 512) -> torch.Tensor:
    model.eval()
    outs = []
    for i in range(0, len(x), batch):
        o = model(x[i:i + batch])
        outs.append(o[:, :n_valid] if n_valid is not None else o)
    return torch.cat(outs) if outs else torch.zeros(0)


def accuracy(pred, y) -> float:
    pred = np.asarray(pred)
    y = np.asarray(y)
    return float((pred == y).mean()) if len(y) else float("nan")
