"""Super-Sub on a pretrained backbone: specialists that change only the network's tail.

The base is the transfer run's int8 flat network (every class).  Its classes are grouped into
superclasses by k-means over the base's per-class mean features (or by a given hierarchy).  A
specialist of superclass k is the base's tail fine-tuned, int8 with the base's frozen scales, on
the training images of k's classes, its loss over k's classes only: a low learning rate and the
epoch of the best accuracy on half of the validation images (fold A) kept.  At inference the base
routes each image to its predicted class's superclass, and the specialist of that superclass picks
among its classes.

**Keep-base.** A specialist is shipped only if, on the other half of the validation images (fold
B, never used to train or to choose an epoch), it beats the base on the images the base routes to
its superclass: at least :data:`MIN_IMAGES` of them, more images it gets right that the base gets
wrong than the reverse, and a one-sided exact sign test on those discordant images below
:data:`ALPHA`.  Otherwise the superclass keeps the base's answer and its delta is zero, so the
bundle never predicts worse than its base on what validation can tell.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn


from . import efficientnet as E
from . import qat
from .tail import copy_weights, logits_of, tail_qatnet, train_tail

log = logging.getLogger(__name__)

MIN_IMAGES = 20  # fold-B images routed to a superclass below which its specialist is not shipped
ALPHA = 0.05  # one-sided sign test: the specialist's wins over the base must be this unlikely by chance
LR_FACTOR = 0.1  # a specialist's learning rate: this times the base tail's


@torch.no_grad()
def pooled_features(model: E.EfficientNetLite, x: torch.Tensor, split: str, batch: int = 256) -> torch.Tensor:
    """The classifier's input (the pooled head output) from cached trunk outputs *x*."""
    names = [n for n, _ in model.parts()]
    mods = dict(model.parts())
    after = [mods[n] for n in names[names.index(split) + 1 :]]
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        h = x[i : i + batch]
        for m in after:
            h = m(h)
        out.append(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1))
    return torch.cat(out)


def class_embeddings(features: torch.Tensor, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class mean features, each scaled to unit length ([n_classes, D])."""
    f = features.numpy().astype(np.float64)
    emb = np.stack([f[labels == c].mean(0) if (labels == c).any() else np.zeros(f.shape[1]) for c in range(n_classes)])
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def kmeans(x: np.ndarray, k: int, seed: int, restarts: int = 8, iters: int = 100) -> np.ndarray:
    """Cluster labels of the rows of *x* (k-means++ starts, the lowest inertia of *restarts*); every
    cluster non-empty."""
    if not 1 <= k <= len(x):
        raise ValueError("k-means with k={} over {} points".format(k, len(x)))
    rng = np.random.default_rng(seed)
    best, best_inertia = None, math.inf
    for _ in range(restarts):
        centres = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
            centres.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
        c = np.asarray(centres)
        for _ in range(iters):
            lab = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
            new = np.stack([x[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        lab = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        inertia = float(((x - c[lab]) ** 2).sum())
        if len(np.unique(lab)) == k and inertia < best_inertia:
            best, best_inertia = lab, inertia
    if best is None:
        raise ValueError("k-means found no clustering with {} non-empty clusters".format(k))
    return best


def embedding_hierarchy(emb: np.ndarray, classes: Sequence[str], k: int, seed: int):
    """A hierarchy of *k* superclasses (``group-01`` ...) by k-means of the class embeddings; each
    superclass lists its classes in the head's order."""
    from ..hierarchy.spec import Hierarchy

    lab = kmeans(emb, k, seed)
    order = sorted(range(k), key=lambda j: int(np.nonzero(lab == j)[0][0]))  # numbered by first member
    width = max(2, len(str(k)))
    names = ["group-{:0{}d}".format(i + 1, width) for i in range(k)]
    subs = [[classes[c] for c in range(len(classes)) if lab[c] == j] for j in order]
    return Hierarchy(names, subs)


def sign_test(base_ok: np.ndarray, spec_ok: np.ndarray) -> dict:
    """Paired comparison on the same images: the specialist's wins (right where the base is wrong),
    losses, and the one-sided exact sign-test p-value of at least that many wins."""
    base_ok, spec_ok = np.asarray(base_ok, bool), np.asarray(spec_ok, bool)
    wins, losses = int((spec_ok & ~base_ok).sum()), int((base_ok & ~spec_ok).sum())
    n = wins + losses
    p = sum(math.comb(n, i) for i in range(wins, n + 1)) / 2.0**n if n else 1.0
    return {
        "images": int(len(base_ok)),
        "base": float(base_ok.mean()) if len(base_ok) else None,
        "specialist": float(spec_ok.mean()) if len(spec_ok) else None,
        "wins": wins,
        "losses": losses,
        "p": float(p),
    }


def ships(test: dict) -> bool:
    """The keep-base rule on a :func:`sign_test` result."""
    return test["images"] >= MIN_IMAGES and test["wins"] > test["losses"] and test["p"] < ALPHA


class Restricted(nn.Module):
    """A network's logits of some head rows only (a specialist trains over its superclass's classes)."""

    def __init__(self, net: nn.Module, rows: Sequence[int]):
        super().__init__()
        self.net = net
        self.register_buffer("rows", torch.as_tensor(list(rows), dtype=torch.long))

    def forward(self, x):
        return self.net(x).index_select(1, self.rows)


def folds(labels: np.ndarray, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Positions (A, B) halving the validation images per class: A chooses, B scores."""
    from ..data.folders import stratified_split

    return stratified_split(labels, 0.5, seed)


def train_specialist(
    base: qat.QATNet,
    boundary: str,
    rows: Sequence[int],
    views: Sequence[torch.Tensor],
    y: torch.Tensor,
    val: Optional[Tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    desc: str,
    progress: bool,
    budget=None,
) -> Tuple[qat.QATNet, dict]:
    """The whole int8 network with its tail fine-tuned on these images (labels *y* local to *rows*),
    scales frozen: the base's trunk bit for bit, so its delta covers only the tail; under delta
    *budget* (:func:`.delta_budget.parse_budget`'s form or text, None: dense) toward the base's tail."""
    from .delta_budget import apply_budget

    tnet = tail_qatnet(base, boundary)
    steps = epochs * max(1, math.ceil(len(y) / batch))
    step = apply_budget(tnet, copy.deepcopy(tnet), budget, steps) if budget is not None else None
    torch.manual_seed(seed)
    hist = train_tail(
        Restricted(tnet, rows),
        views,
        y,
        val,
        epochs,
        lr,
        batch,
        seed,
        desc,
        progress,
        weight_decay=0.0,
        after_step=step,
    )
    full = qat.QATNet.from_state(copy.deepcopy(base.state()))
    copy_weights(tnet, full)
    full.eval()
    return full, {"history": hist, "tail": tnet}


def routed_correct(logits: torch.Tensor, y: torch.Tensor, rows: Sequence[int]) -> np.ndarray:
    """Right or wrong, per image, when the class is picked among *rows* only."""
    r = torch.as_tensor(list(rows))
    return (r[logits.index_select(1, r).argmax(1)] == y).numpy()


def decide(
    base_tail: nn.Module,
    spec_tail: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    superclass_of: np.ndarray,
    k: int,
    rows: Sequence[int],
) -> dict:
    """The keep-base test of superclass *k* on images *x* (fold B): those the base routes to *k*."""
    base_logits = logits_of(base_tail, x)
    routed = superclass_of[base_logits.argmax(1).numpy()] == k
    idx = torch.as_tensor(np.nonzero(routed)[0])
    base_ok = (base_logits.argmax(1)[idx] == y[idx]).numpy()
    spec_ok = routed_correct(logits_of(spec_tail, x[idx]), y[idx], rows) if len(idx) else np.zeros(0, bool)
    test = sign_test(base_ok, spec_ok)
    test["ship"] = ships(test)
    return test


def superclass_of_class(hier, classes: Sequence[str]) -> np.ndarray:
    sup = np.zeros(len(classes), dtype=np.int64)
    index = {c: i for i, c in enumerate(classes)}
    for k, subs in enumerate(hier.subclasses):
        for c in subs:
            sup[index[c]] = k
    return sup


def rows_of(hier, classes: Sequence[str]) -> List[List[int]]:
    index = {c: i for i, c in enumerate(classes)}
    return [[index[c] for c in subs] for subs in hier.subclasses]


def summary(decisions: Dict[str, dict]) -> str:
    shipped = [n for n, d in decisions.items() if d["ship"]]
    return "{} of {} superclasses have a specialist that beats the base on held-out validation{}".format(
        len(shipped), len(decisions), ": " + ", ".join(shipped) if shipped else "; the bundle is the base alone"
    )
