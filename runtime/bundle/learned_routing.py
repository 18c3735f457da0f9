"""A learned router for gated top-2: one definition for the device and the toolchain.

The order of work stays the runtime's: the superclass network, then the first route's subclass
network, then the second route's only where the gate fires (one extra switch).  Two decisions
are learned at export (``edgetool.toolchain.routing.learn``) and carried in the manifest as
``routing.learned``:

* **the gate**: a score per image, higher firing first, fired above ``threshold``: either
  ``-max(p_super)`` (no model: the shipped top-probability gate), or a logistic regression on
  what is known before the extra switch (:func:`gate_features`);
* **a combiner per pair of clusters** (a < b): a small model from
  ``[log p_super, log q_a, log q_b]`` (each subclass network's whole log-softmax, its "not mine"
  row included, or :data:`NO_ROW` where it has none), and where ``features`` is set, both
  subclass networks' :data:`FEATURES` output (``[..., f_a, f_b]``), to the classes of a, then
  of b.  A pair without a combiner keeps equation 2 (``p_super^beta x p_sub``).

Models are plain arrays: standardise by ``mean``/``std``, then dense layers with ReLU between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .names import check, fail

NO_ROW = -30.0  # log "not mine" of a subclass network without that row
GATE_FEATURES = 6
FEATURES = "features"  # the graph output of a network's pooled activations (export.onnx_export)
MAX_FEATURES = 4096
MAX_HIDDEN = 64
MAX_LAYERS = 3


def log_softmax(logits: np.ndarray, n_valid: int) -> np.ndarray:
    """Log-softmax (float64) over the first *n_valid* logits of each row."""
    z = np.asarray(logits, dtype=np.float64)[..., :n_valid]
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def with_not_mine(lq: np.ndarray, n: int) -> np.ndarray:
    """A subclass network's log output over its *n* classes and a "not mine" column (NO_ROW when
    the network has no such row)."""
    if lq.shape[-1] == n + 1:
        return lq
    return np.concatenate([lq, np.full(lq.shape[:-1] + (1,), NO_ROW)], axis=-1)


def gate_features(lp_first, lp_second, lq_first: np.ndarray, n_first: int) -> np.ndarray:
    """What the learned gate sees, per image (arrays: one row per image): log p_super of both
    routes; the first route's log "not mine", log(1 - p_not_mine), and its top and second class."""
    lq_first = np.atleast_2d(lq_first)
    own = np.sort(lq_first[:, :n_first], axis=1)
    top = own[:, -1]
    second = own[:, -2] if n_first > 1 else np.full(len(own), NO_ROW)
    nm = lq_first[:, n_first]
    lp = [np.atleast_1d(lp_first), np.atleast_1d(lp_second)]
    return np.stack(lp + [nm, np.log1p(-np.exp(nm) + 1e-9), top, second], 1)


@dataclass(frozen=True, eq=False)
class Model:
    """Standardise, then dense layers (ReLU between): ``(n, mean.size) -> (n, out)``."""

    mean: np.ndarray
    std: np.ndarray
    layers: Tuple[Tuple[np.ndarray, np.ndarray], ...]  # (weight (out, in), bias (out,))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(np.asarray(x, dtype=np.float64)) - self.mean) / self.std
        for i, (w, b) in enumerate(self.layers):
            z = z @ w.T + b
            if i < len(self.layers) - 1:
                z = np.maximum(z, 0.0)
        return z

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "layers": [{"weight": w.tolist(), "bias": b.tolist()} for w, b in self.layers],
        }


@dataclass(frozen=True, eq=False)
class Learned:
    gate: Optional[Model]  # None: the gate score is -max(p_super)
    threshold: float
    pairs: Dict[Tuple[int, int], Model]
    features: int = 0  # width of the FEATURES output the combiners take in (0: they take none)

    def gate_score(self, lp: np.ndarray, r1: int, r2: int, lq_first: np.ndarray, n_first: int) -> float:
        """One image's gate score (*lp*: its log p_super; *lq_first*: the first route's log output
        with its "not mine" column)."""
        if self.gate is None:
            return -float(np.exp(lp.max()))
        return float(self.gate(gate_features(lp[r1], lp[r2], lq_first, n_first))[0, 0])

    def combine(self, a: int, b: int, lp, lq_a, lq_b, n_a: int, f_a=None, f_b=None) -> Optional[Tuple[int, int]]:
        """(route, class index in that route) the pair's combiner answers for one image, a < b;
        None where the pair has no combiner.  *f_a*, *f_b*: the networks' features, where
        ``features`` is set."""
        model = self.pairs.get((a, b))
        if model is None:
            return None
        parts = [lp, lq_a, lq_b] + ([f_a, f_b] if self.features else [])
        j = int(np.argmax(model(np.concatenate(parts))[0]))
        return (a, j) if j < n_a else (b, j - n_a)

    def to_dict(self) -> dict:
        return {
            "gate": self.gate.to_dict() if self.gate is not None else None,
            "threshold": self.threshold,
            "features": self.features,
            "pairs": [{"a": a, "b": b, "model": m.to_dict()} for (a, b), m in sorted(self.pairs.items())],
        }

    def describe(self) -> str:
        gate = "a learned gate" if self.gate is not None else "a top-probability gate"
        on = " on outputs and {} features".format(self.features) if self.features else ""
        return "{} and {} pair combiner{}{}".format(gate, len(self.pairs), "" if len(self.pairs) == 1 else "s", on)


# -- the manifest's routing.learned, every field checked ------------------------------------------


def _vector(value, field: str, size: int, positive: bool = False) -> np.ndarray:
    v = check(value, field, list)
    if len(v) != size:
        fail(field, "has {} numbers, must have {}".format(len(v), size))
    out = np.array([check(x, "{}[{}]".format(field, i), float) for i, x in enumerate(v)], dtype=np.float64)
    if positive and (out <= 0).any():
        fail(field, "must hold positive numbers only")
    return out


def _model(value, field: str, n_in: int, n_out: int) -> Model:
    d = check(value, field, dict)
    layers = check(d.get("layers"), field + ".layers", list)
    if not 1 <= len(layers) <= MAX_LAYERS:
        fail(field + ".layers", "has {} layers, must have 1..{}".format(len(layers), MAX_LAYERS))
    out, width = [], n_in
    for i, layer in enumerate(layers):
        f = "{}.layers[{}]".format(field, i)
        layer = check(layer, f, dict)
        rows = check(layer.get("weight"), f + ".weight", list)
        last = i == len(layers) - 1
        if not last and not 1 <= len(rows) <= MAX_HIDDEN:
            fail(f + ".weight", "has {} rows, a hidden layer must have 1..{}".format(len(rows), MAX_HIDDEN))
        if last and len(rows) != n_out:
            fail(f + ".weight", "has {} rows, must have {}".format(len(rows), n_out))
        w = np.stack([_vector(r, "{}.weight[{}]".format(f, j), width) for j, r in enumerate(rows)])
        out.append((w, _vector(layer.get("bias"), f + ".bias", len(rows))))
        width = len(rows)
    return Model(
        _vector(d.get("mean"), field + ".mean", n_in), _vector(d.get("std"), field + ".std", n_in, True), tuple(out)
    )


def parse(value, sizes: Sequence[int]) -> Optional[Learned]:
    """``routing.learned`` checked against the hierarchy (*sizes*: classes per superclass)."""
    if value is None:
        return None
    d = check(value, "routing.learned", dict)
    gate = d.get("gate")
    gate = None if gate is None else _model(gate, "routing.learned.gate", GATE_FEATURES, 1)
    threshold = check(d.get("threshold"), "routing.learned.threshold", float)
    features = check(d.get("features", 0), "routing.learned.features", int, 0, MAX_FEATURES)
    n_super, pairs = len(sizes), {}
    for i, p in enumerate(check(d.get("pairs", []), "routing.learned.pairs", list)):
        f = "routing.learned.pairs[{}]".format(i)
        p = check(p, f, dict)
        a = check(p.get("a"), f + ".a", int, 0, n_super - 1)
        b = check(p.get("b"), f + ".b", int, a + 1, n_super - 1)
        if (a, b) in pairs:
            fail(f, "a second combiner for the pair ({}, {})".format(a, b))
        n_in = n_super + sizes[a] + 1 + sizes[b] + 1 + 2 * features
        pairs[(a, b)] = _model(p.get("model"), f + ".model", n_in, sizes[a] + sizes[b])
    return Learned(gate, threshold, pairs, features)
