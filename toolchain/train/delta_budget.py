"""The delta budget: how far a QAT subclass network may move from the base network.

One knob (``--delta-budget``) with these forms: dense, a proximal threshold tau, a delta grid
``gridM``, a top share such as ``30%``, and the BatchNorm/head ``patch``.  Each keeps the
exported delta ``(q_sub - q_base) mod 256`` exact; they differ in how many codes move and how
many distinct values the moves take, which is what the compressed delta costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from .qat import QATNet


class DeltaBudget(NamedTuple):
    """A parsed delta budget: its mode (one of :data:`edgetool.runtime.choices.BUDGET_MODES`) and
    value (tau, a share of weights, or a grid step; 0 for dense and patch).  The bundle's manifest
    records it (``training.delta_budget``)."""

    mode: str
    value: float

    def to_dict(self, text: str) -> dict:
        return {"mode": self.mode, "value": self.value, "text": text}


def parse_budget(budget) -> DeltaBudget:
    """The delta budget knob, as a :class:`DeltaBudget`: ``("dense", 0)``, ``("prox", tau)``,
    ``("topk", density)``, ``("grid", step)`` or ``("patch", 0)``.

    ``0`` (or ``dense``) lets every weight move; a number tau > 0 is the threshold of the
    proximal step toward the base (in units of the step's learning rate); a percentage such as
    ``30%`` keeps at most that share of the int8 weights away from the base (the rest snap back
    to it exactly; see :class:`DeltaTopK`); ``gridM`` (M = 2 ... 64) rounds every code's move
    from the base to a multiple of M codes (:meth:`QATNet.set_delta_grid`); ``patch`` trains
    only the per-channel BatchNorm scale/bias and the classifier head (Mudrakarta et al., "K for
    the price of 1"), the cheapest end of the same knob.
    """
    text = str(budget).strip().lower()
    if text in ("patch", "bn", "bn-patch"):
        return DeltaBudget("patch", 0.0)
    if text in ("dense", "none", "", "100%"):
        return DeltaBudget("dense", 0.0)
    if text.startswith("grid"):
        try:
            step = int(text[4:])
        except ValueError:
            step = 0
        if not 2 <= step <= 64:
            raise ValueError("delta budget {!r}: a delta grid is grid2 ... grid64 (codes)".format(budget))
        return DeltaBudget("grid", float(step))
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            pct = float("nan")
        if not 0 < pct <= 100:
            raise ValueError("delta budget {!r}: a share of weights must be a percentage in (0, 100]".format(budget))
        return DeltaBudget("topk", pct / 100.0)
    try:
        tau = float(text)
    except ValueError:
        raise ValueError(
            "delta budget {!r}: give a number >= 0 (the proximal threshold tau), a percentage "
            "of weights such as 30%, or 'patch'".format(budget)
        )
    if not tau >= 0 or tau == float("inf"):
        raise ValueError("delta budget {!r}: tau must be a finite number >= 0".format(budget))
    return DeltaBudget("prox", tau) if tau > 0 else DeltaBudget("dense", 0.0)


def _int8_pairs(net: "QATNet", base: "QATNet"):
    """(trainable int8 weight, its base copy, its per-channel code step shaped to broadcast)."""
    out = []
    for n in net.layers:
        p = net.weight(n + ".weight")
        if p.requires_grad:
            s = net.wscale(n).detach().clone().reshape([-1] + [1] * (p.dim() - 1))
            out.append((p, base.weight(n + ".weight").detach().clone(), s))
    return out


def _follow(items: list) -> list:
    """*items* with each base copy and step on the device of its weight (fit moves the network
    to the training device after the budget step was made)."""
    if not items or items[0][1].device == items[0][0].device:
        return items
    return [(t[0],) + tuple(v.to(t[0].device) for v in t[1:]) for t in items]


class ProximalStep:
    """Soft-threshold every int8 weight toward the base after each optimizer step.

    ``w <- w_base + sign(d) * max(|d| - tau * lr, 0)`` with ``d = w - w_base``: the proximal
    operator of ``tau * |w - w_base|_1`` scaled by the step's learning rate.  A weight whose
    accumulated move stays below the threshold snaps back to the base *exactly*, so its int8
    code equals the base code and its delta byte is 0.  Adam moves every weight by about one
    learning rate per step whatever its gradient, so without this nearly every code changes.

    Only the int8 weights (conv and fc) are thresholded: the per-channel float leftovers
    (BatchNorm scale/bias, fc bias) change with the running statistics anyway, are a few
    percent of the bytes, and shrinking them costs accuracy for no storage.
    """

    def __init__(self, net: "QATNet", base: "QATNet", tau: float):
        self.tau = float(tau)
        self.pairs = [(p, a) for p, a, _ in _int8_pairs(net, base)]

    @torch.no_grad()
    def __call__(self, lr: float) -> None:
        thresh = self.tau * lr
        self.pairs = _follow(self.pairs)
        for p, a in self.pairs:
            d = p - a
            keep = d.abs() > thresh
            p.copy_(torch.where(keep, p - thresh * d.sign(), a))


class DeltaTopK:
    """Keep only the largest share of the delta: gradual magnitude pruning toward the base.

    After each optimizer step, every int8 weight is ranked by its move from the base in code
    steps, ``|w - w_base| / s`` (each changed code costs the same bytes whatever its layer),
    and all but the top ``density(t)`` share snap back to the base *exactly*.  ``density(t)``
    falls from 1 to the target *density* along Zhu & Gupta's cubic schedule over the first
    *ramp* of the fine-tune, then stays at the target, so the network first learns freely and
    then concentrates its change in the weights that move most.  The ranking is redone every
    step, so a weight that was snapped back may re-enter when its gradient insists.

    Unlike the proximal step, kept weights are not shrunk, and the budget is a share of codes
    rather than a threshold in float units (a learning rate is a different number of code steps
    in every layer).
    """

    def __init__(self, net: "QATNet", base: "QATNet", density: float, total_steps: int, ramp: float = 0.6):
        if not 0 < density <= 1:
            raise ValueError("density must be in (0, 1]")
        self.density = float(density)
        self.total = max(1, int(total_steps))
        self.ramp = float(ramp)
        self.t = 0
        self.items = _int8_pairs(net, base)
        self.n = sum(p.numel() for p, _, _ in self.items)

    def density_at(self, t: int) -> float:
        f = min(1.0, t / max(1.0, self.ramp * self.total))
        return self.density + (1.0 - self.density) * (1.0 - f) ** 3

    @torch.no_grad()
    def __call__(self, lr: float) -> None:
        self.t += 1
        keep = int(round(self.density_at(self.t) * self.n))
        if keep >= self.n or not self.items:
            return
        self.items = _follow(self.items)
        scores = [((p - a).abs() / s).reshape(-1) for p, a, s in self.items]
        flat = torch.cat(scores)
        if keep <= 0:
            thresh = float("inf")
        else:
            thresh = float(torch.kthvalue(flat, self.n - keep).values)  # keep the scores above it
        for (p, a, _), sc in zip(self.items, scores):
            p.copy_(torch.where((sc > thresh).reshape(p.shape), p, a))


def budget_step(net: "QATNet", base: "QATNet", budget, total_steps: int):
    """The after-step callable that enforces *budget* (as :func:`parse_budget` returns it, or its
    text) on *net* (None for dense and patch)."""
    mode, value = budget if isinstance(budget, tuple) else parse_budget(budget)
    if mode == "prox":
        return ProximalStep(net, base, value)
    if mode == "topk":
        return DeltaTopK(net, base, value, total_steps)
    return None


def freeze_for_patch(net: "QATNet") -> None:
    """Patch mode: only BatchNorm (scale/bias and running statistics) and the fc head train."""
    head = net.head_layers()
    for layer in net.layers:
        net.weight(layer + ".weight").requires_grad_(layer in head)


def apply_budget(net: "QATNet", base: "QATNet", budget, total_steps: int):
    """Set *net* up to train under *budget* toward *base* (patch: only BatchNorm and the head train;
    gridM: code moves on the grid) and return the after-step callable that enforces the rest."""
    mode, value = budget if isinstance(budget, tuple) else parse_budget(budget)
    if mode == "patch":
        freeze_for_patch(net)
    if mode == "grid":
        net.set_delta_grid(base, int(value))
    return budget_step(net, base, (mode, value), total_steps)
