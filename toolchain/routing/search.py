"""Routing that can recover, measured: top-1 against confidence-gated top-k (equation 2).

From per-image probabilities of the superclass network (``P``, n x N) and of every subclass
network on every image (``Q[k]``, n x n_k), each policy is replayed exactly as the runtime's
``SuperSubClassifier`` runs it:

* **top-1** (the paper's per-image policy): the most likely superclass routes the image;
* **gated top-k**: when the superclass confidence max(P) is below ``gate``, the ``k`` most
  likely superclasses are each tried and the best ``p_i x q_k`` wins (Chennupati et al.,
  equation 2); over overlapping clusters a class is reachable through several superclasses.

A *stage-1 error* is an image that top-1 routes to a superclass whose subclass network cannot
output its class.  *Recovered*: such an image that gated top-k classifies correctly.
*Recoverable*: such an image that the gate sends down a second route whose subclass network
outputs its class: the most any rule for choosing among the routes could recover at that gate.
*Extra switches per image*: subclass networks run beyond the first, per image.
"""

from __future__ import annotations

import dataclasses
import logging

from typing import List, Optional, Sequence

import numpy as np
import torch

from edgetool.runtime.bundle import routing

from ..train import fit as training

GATES = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
BETAS = (1.0, 0.75, 0.5, 0.35, 0.25, 0.2, 0.15, 0.1)  # equation 2 first: it wins ties
MAX_EXTRA = 0.2  # extra switches per image the gate is chosen under
FEW_IMAGES = 1000  # below this many images export says the routing choice is unsure

log = logging.getLogger(__name__)


def network_logits(run, nets: Sequence, x: torch.Tensor, base=None):
    """(superclass logits, [subclass network k's logits]) in float64: the valid rows only (a
    subclass network's classes, and its "not mine" row where it has one)."""
    zp, zq, _ = network_outputs(run, nets, x, base)
    return zp, zq


def network_outputs(run, nets: Sequence, x: torch.Tensor, base=None, features: bool = False):
    """:func:`network_logits`, and with *features* each QAT subclass network's pooled features
    (the exported graph's ``features``) from the same pass, else None."""
    base = base if base is not None else run.superclass()
    zp = training.predict_logits(base, x, run.hier.n_super).double()
    outs = [training.predict_logits(net, x, run.hier.outputs(k), features=features) for k, net in enumerate(nets)]
    if not features:
        return zp, [z.double() for z in outs], None
    return zp, [z.double() for z, _ in outs], [f.double().numpy() for _, f in outs]


def network_probs(run, nets: Sequence, x: torch.Tensor, base=None):
    """(P, [Q_k]): softmax over the valid logits of the superclass network and of each subclass
    network (its classes, and the "not mine" row where there is one: Q_k keeps its classes' part)."""
    return probs_of(run, network_logits(run, nets, x, base))


def probs_of(run, logits):
    """:func:`network_probs` from the :func:`network_logits` *logits*."""
    zp, zq = logits
    qs = [torch.softmax(z, 1).numpy()[:, : len(s)] for z, s in zip(zq, run.hier.subclasses)]
    return torch.softmax(zp, 1).numpy(), qs


def route(p: np.ndarray, qs: List[np.ndarray], members: List[np.ndarray], gate: float, k: int, beta: float = 1.0):
    """(predicted dataset class, subclass networks run) per image under gated top-k (k=1: top-1);
    routes compete by p_super^beta x p_sub (beta = 1: equation 2; beta = 0: p_sub alone)."""
    n = len(p)
    order = np.argsort(-p, axis=1, kind="stable")
    rows = np.arange(n)
    q_best = np.stack([q.max(1) for q in qs], 1)  # (n, N)
    q_arg = np.stack([q.argmax(1) for q in qs], 1)
    first = order[:, 0]
    score = routing.score(p[rows, first], q_best[rows, first], beta)
    chosen = first.copy()
    unsure = p[rows, first] < gate
    for r in range(1, min(k, p.shape[1])):
        c = order[:, r]
        s = routing.score(p[rows, c], q_best[rows, c], beta)
        better = unsure & (s > score)
        chosen[better], score[better] = c[better], s[better]
    pred = np.array([members[c][q_arg[i, c]] for i, c in enumerate(chosen)], dtype=np.int64)
    passes = 1 + unsure * (min(k, p.shape[1]) - 1)
    return pred, passes


def recoverable(p, qs, members, y: np.ndarray, gate: float, k: int) -> np.ndarray:
    """Per image: the gate fires and a route beyond the first outputs its class."""
    order = np.argsort(-p, axis=1, kind="stable")
    q_arg = np.stack([q.argmax(1) for q in qs], 1)
    rows = np.arange(len(p))
    hit = np.zeros(len(p), dtype=bool)
    for r in range(1, min(k, p.shape[1])):
        c = order[:, r]
        hit |= np.array([members[ci][q_arg[i, ci]] for i, ci in enumerate(c)], dtype=np.int64) == y
    return hit & (p[rows, order[:, 0]] < gate)


def policy(p, qs, members, local: np.ndarray, y: np.ndarray, gate: float, k: int, beta: float = 1.0) -> dict:
    """Accuracy, stage-1 errors recovered and extra switches per image of gated top-k against top-1."""
    top1, _ = route(p, qs, members, 1.0, 1)
    pred, passes = route(p, qs, members, gate, k, beta)
    stage1 = local[p.argmax(1), y] < 0
    recovered = stage1 & (pred == y)
    n_err = int(stage1.sum())
    reach = stage1 & recoverable(p, qs, members, y, gate, k)
    return {
        "gate": float(gate),
        "k": int(k),
        "beta": float(beta),
        "accuracy": float((pred == y).mean()),
        "top1_accuracy": float((top1 == y).mean()),
        "stage1_errors": n_err,
        "recovered": int(recovered.sum()),
        "recovered_fraction": float(recovered.sum() / n_err) if n_err else None,
        "recovered_fraction_reason": None if n_err else "no stage-1 errors",
        "recoverable": int(reach.sum()),
        "lost": int(((top1 == y) & (pred != y)).sum()),
        "extra_switches_per_image": float(passes.mean() - 1.0),
    }


def choose(p, qs, members, local, y, k: int = 2, max_extra: float = MAX_EXTRA, betas=BETAS) -> tuple:
    """(gate, beta) with the best accuracy at no more than *max_extra* extra switches per image
    (on the data given: a validation split, never the test set); ties go to the earlier beta
    and the lower gate."""
    best: Optional[tuple] = None
    for b in betas:
        for g in GATES:
            r = policy(p, qs, members, local, y, g, k, b)
            if r["extra_switches_per_image"] <= max_extra and (best is None or r["accuracy"] > best[0]):
                best = (r["accuracy"], g, b)
    assert best is not None  # gate 0 never takes a second route
    return best[1], best[2]


def choose_gate(p, qs, members, local, y, k: int = 2, max_extra: float = MAX_EXTRA) -> float:
    """The gate of equation 2 (beta = 1) chosen as :func:`choose` does."""
    return choose(p, qs, members, local, y, k, max_extra, betas=(1.0,))[0]


def choose_on_validation(run, nets: Sequence, k: int = 2, betas=BETAS, base=None, data=None):
    """The gated top-*k* routing chosen on the run's validation split, or on *data* (images
    tensor, labels) where given (None without either)."""
    return _choose(run, nets, k, betas, base, data)[0]


def _choose(run, nets, k, betas, base, data, features=False):
    """(the routing of :func:`choose_on_validation`, (labels, (logits, features), accuracy) it
    was chosen on; the subclass networks' features with *features*, else None)."""
    if data is None and run.data.val is None:
        return None, None
    xv, yv = data if data is not None else (training.to_tensor(run.data.val, run.mean, run.std), run.data.val.labels)
    zp, zq, pooled = network_outputs(run, nets, xv, base, features)
    pv, qv = probs_of(run, (zp, zq))
    members = run.hier.members(run.train.classes)
    gate, beta = choose(pv, qv, members, run.data.local, yv, k, betas=betas)
    accuracy = policy(pv, qv, members, run.data.local, yv, gate, k, beta)["accuracy"]
    where = "{} ({} images): best accuracy at <= {:g} extra switches per image"
    chosen = routing.Routing(gate, k, beta, where.format(_split(data), len(yv), MAX_EXTRA))
    return chosen, (np.asarray(yv), (zp, zq, pooled), accuracy)


def _split(data) -> str:
    return "validation split" if data is None else "given images"


def bundle_routing(run, base, subs: Sequence, k: int = 2, data=None, features: bool = True) -> Optional[dict]:
    """The manifest's ``routing`` for the int8 networks *base* and *subs*, chosen on the validation
    split (or *data*): gated top-*k* ({"routing": ...}), and with at least ``MIN_IMAGES`` images a
    learned gate and pair combiners where their cross-fitted accuracy beats it; None when the run
    has no validation split (the runtime's defaults).  *features* False: the pair combiners take the
    networks' outputs alone, not their pooled features."""
    from . import learn

    k = min(k, run.hier.n_super)
    chosen, seen = _choose(run, subs, k, BETAS, base, data, features=True)
    if chosen is None:
        return None
    yv, (zp, zq, pooled), accuracy = seen
    if len(yv) < FEW_IMAGES:
        log.warning(
            "the routing (gate %g, beta %g) was chosen on %d images of the %s, too few stage-1 errors to choose "
            "surely; a larger --val-fraction at train time gives more (%d or more)",
            chosen.gate,
            chosen.beta,
            len(yv),
            _split(data),
            FEW_IMAGES,
        )
    if k == 2 and len(yv) >= learn.MIN_IMAGES:
        router, best = learn.learn(learn.from_logits(run, zp, zq, yv, pooled if features else None), chosen.beta)
        if best["cross_fitted_accuracy"] > accuracy:
            text = "{} ({} images): learned router {:.2%} (cross-fitted), equation 2 {:.2%}".format(
                _split(data), len(yv), best["cross_fitted_accuracy"], accuracy
            )
            chosen = dataclasses.replace(chosen, chosen_on=text, learned=router)
    return {"routing": chosen.to_dict()}


def policies(run, nets: Optional[Sequence] = None, k: int = 2, gate: Optional[float] = None, betas=BETAS) -> dict:
    """Top-1, gated top-k (gate and beta chosen on the run's validation split when it has one)
    and equation 2 over every superclass, for the vanilla subclass networks (or *nets*) on the test set."""
    nets = nets if nets is not None else [run.vanilla(c) for c in range(run.hier.n_super)]
    members = run.hier.members(run.train.classes)
    local = run.data.local
    chosen = routing.Routing(gate, k, 1.0, "given") if gate is not None else choose_on_validation(run, nets, k, betas)
    if chosen is None:
        chosen = routing.Routing(routing.GATE, k, routing.BETA, "default (the run has no validation split)")
    p, qs = network_probs(run, nets, run.xte)
    y = run.yte.numpy()
    return {
        "networks": "vanilla fp32 subclass networks",
        "gate_chosen_on": chosen.chosen_on,
        "topk": policy(p, qs, members, local, y, chosen.gate, k, chosen.beta),
        "all_superclasses": policy(p, qs, members, local, y, 2.0, run.hier.n_super),
        "sweep": [policy(p, qs, members, local, y, g, k, chosen.beta) for g in GATES],
    }
