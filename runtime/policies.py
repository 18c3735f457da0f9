"""Routing policies of the two-stage classifier, one object each.

A policy takes a batch and the classifier's stages (:class:`Networks`: the superclass network's
probabilities, a subclass network's probabilities or log outputs, each run on demand, since a
policy decides which networks run at all) and returns one :class:`Prediction` per image.

* :class:`PerImage`  - the paper's: for each image, base network, then its subclass network;
* :class:`Batched`   - one base pass over the batch, then one switch per predicted superclass
  for the images routed to it (the same predictions as per-image);
* :class:`Sticky`    - for video: the subclass network of the last routed frame stays loaded
  and classifies the next frames alone while its confidence stays >= ``gate``; the base
  network re-routes every ``interval`` frames or when the confidence drops;
* :class:`TopK`      - confidence-gated: when the superclass confidence is below the gate, the
  top-k superclasses are each tried and the best p_super^beta x p_sub wins (beta = 1:
  Chennupati et al., equation 2); with overlapping clusters a second route can recover a
  routing error of the superclass network;
* :class:`Learned`   - gated top-2 with the bundle's learned gate and pair combiners
  (:mod:`.bundle.learned_routing`), equation 2 for a pair without a combiner;
* :class:`Flat`      - a flat bundle: one pass of its one network, whatever the policy asked
  (``fine=False``: the superclass of its prediction alone, as the stream's ``superclass`` policy);
* :class:`Specialists` - a flat bundle with specialists: the base over every class, then, for the
  images whose predicted class is in a superclass with a specialist, one switch to it per such
  superclass in the batch (the base's answer stands everywhere else).

Every policy also classifies consecutive frames (:meth:`Policy.stream`); only the stream's sticky
policy (``camera/schedule.py``) carries anything from one frame to the next.
"""

from __future__ import annotations

from typing import Any, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from .bundle import learned_routing
from .bundle import routing as R
from .prediction import Prediction, masked_softmax, of_class


class Networks(Protocol):
    """What a policy may ask of the classifier; each call runs the network it names."""

    bundle: Any

    def base_logits(self, batch: np.ndarray) -> np.ndarray: ...

    def superclass_probs(self, batch: np.ndarray) -> np.ndarray: ...

    def subclass_probs(self, batch: np.ndarray, k: int) -> np.ndarray: ...

    def subclass_evidence(self, batch: np.ndarray, k: int, features: bool = False) -> Tuple[np.ndarray, Any]: ...

    def prediction(self, k: int, p_super: float, p_sub: np.ndarray) -> Prediction: ...

    def network_logits(self, batch: np.ndarray, k: int) -> np.ndarray: ...


class Policy:
    """Routes a batch through *nets*; ``reset`` forgets what a stream policy carries between frames."""

    def __call__(self, nets: Networks, batch: np.ndarray) -> List[Prediction]:
        raise NotImplementedError

    def stream(self, nets: Networks, frames: np.ndarray, cuts: Sequence[bool] = ()) -> List[Prediction]:
        """Consecutive *frames*; ``cuts[i]`` marks a scene cut before frame i, which only a policy that
        carries something between frames needs."""
        return self(nets, frames)

    def reset(self) -> None:
        pass


def _routed(nets: Networks, x: np.ndarray) -> Tuple[int, np.ndarray, Prediction]:
    """One image through the superclass network and the subclass network it routes to."""
    ps = nets.superclass_probs(x)[0]
    k = int(np.argmax(ps))
    return k, ps, nets.prediction(k, ps[k], nets.subclass_probs(x, k)[0])


class PerImage(Policy):
    def __call__(self, nets, batch):
        return [_routed(nets, batch[i : i + 1])[2] for i in range(len(batch))]


class Batched(Policy):
    def __call__(self, nets, batch):
        ps = nets.superclass_probs(batch)
        ks = ps.argmax(axis=1)
        out: List[Optional[Prediction]] = [None] * len(batch)
        for k in sorted(set(int(k) for k in ks)):
            idx = np.nonzero(ks == k)[0]
            probs = nets.subclass_probs(batch[idx], k)
            for n, i in enumerate(idx):
                out[i] = nets.prediction(k, ps[i, k], probs[n])
        return out


class Sticky(Policy):
    def __init__(self, gate: float, interval: int):
        self.gate, self.interval = float(gate), int(interval)
        self.reset()

    def reset(self) -> None:
        self.k: Optional[int] = None  # the loaded subclass network
        self.p_super = 0.0  # its superclass probability when it was routed
        self.since = 0  # frames served since routing

    def __call__(self, nets, batch):
        return [self._one(nets, batch[i : i + 1]) for i in range(len(batch))]

    def _one(self, nets: Networks, x: np.ndarray) -> Prediction:
        if self.k is not None and self.since < self.interval:
            p_sub = nets.subclass_probs(x, self.k)[0]
            if float(p_sub.max()) >= self.gate:
                self.since += 1
                return nets.prediction(self.k, self.p_super, p_sub)
        k, ps, pred = _routed(nets, x)
        self.k, self.p_super, self.since = k, float(ps[k]), 1
        return pred


class TopK(Policy):
    def __init__(self, routing: R.Routing):
        self.routing = routing

    def __call__(self, nets, batch):
        return [self._one(nets, batch[i : i + 1]) for i in range(len(batch))]

    def _one(self, nets: Networks, x: np.ndarray) -> Prediction:
        ps = nets.superclass_probs(x)[0]
        order = np.argsort(-ps)
        cands = [int(order[0])]
        if ps[order[0]] < self.routing.gate:
            cands = [int(k) for k in order[: self.routing.k]]
        best: Optional[Prediction] = None
        best_score = 0.0
        for k in cands:
            p = nets.prediction(k, ps[k], nets.subclass_probs(x, k)[0])
            s = R.score(p.p_super, p.p_sub, self.routing.beta)
            if best is None or s > best_score:
                best, best_score = p, s
        assert best is not None  # cands is never empty
        return best


class Learned(Policy):
    def __init__(self, routing: R.Routing, sizes: Sequence[int]):
        assert routing.learned is not None
        self.learned, self.beta, self.sizes = routing.learned, routing.beta, list(sizes)

    def __call__(self, nets, batch):
        return [self._one(nets, batch[i : i + 1]) for i in range(len(batch))]

    def _one(self, nets: Networks, x: np.ndarray) -> Prediction:
        learned, sizes = self.learned, self.sizes
        lp = learned_routing.log_softmax(nets.base_logits(x), len(sizes))[0]
        ps = np.exp(lp)
        r1, r2 = (int(r) for r in np.argsort(-lp, kind="stable")[:2])
        lq, f, use = {}, {}, learned.features > 0  # log outputs, features (None unless used)
        lq[r1], f[r1] = nets.subclass_evidence(x, r1, use)
        first = nets.prediction(r1, ps[r1], np.exp(lq[r1][0, : sizes[r1]]))
        if learned.gate_score(lp, r1, r2, lq[r1][0], sizes[r1]) <= learned.threshold:
            return first
        lq[r2], f[r2] = nets.subclass_evidence(x, r2, use)
        a, b = min(r1, r2), max(r1, r2)
        fa, fb = (f[a][0], f[b][0]) if use else (None, None)
        pick = learned.combine(a, b, lp, lq[a][0], lq[b][0], sizes[a], fa, fb)
        if pick is None:  # equation 2, in logs as the combiners were chosen with
            s1, s2 = (self.beta * lp[r] + lq[r][0, : sizes[r]].max() for r in (r1, r2))
            return nets.prediction(r2, ps[r2], np.exp(lq[r2][0, : sizes[r2]])) if s2 > s1 else first
        k, j = pick
        return of_class(nets.bundle, k, j, ps[k], np.exp(lq[k][0, j]), np.exp(lq[k][0, : sizes[k]]))


class Flat(Policy):
    """A flat bundle: the superclass is the predicted class's (primary) one; p_super sums its
    classes' probabilities, so p_super x p_sub is the class's probability.  With ``fine=False`` a
    prediction names that superclass alone (no fine label, p_sub 1), as the stream's
    ``superclass`` policy reports a Super-Sub bundle's base network."""

    def __init__(self, route: Sequence[Tuple[int, int]], fine: bool = True):
        self.route, self.fine = list(route), bool(fine)
        self.sup = np.array([k for k, _ in self.route])

    def __call__(self, nets, batch):
        out = []
        names = [nets.bundle.superclasses[k].subclasses[j] for k, j in self.route]  # the network's classes
        for row in masked_softmax(nets.base_logits(batch), len(self.route)):
            c = int(np.argmax(row))
            k, j = self.route[c]
            p_super = float(row[self.sup == k].sum())
            if self.fine:
                s = nets.bundle.superclasses[k]
                out.append(Prediction(k, s.name, j, s.subclasses[j], p_super, row[c] / p_super, (names, row, 1.0, c)))
            else:
                out.append(Prediction(k, nets.bundle.superclasses[k].name, None, None, p_super, 1.0))
        return out


class Specialists(Flat):
    """A flat bundle with specialists (``model.specialists``): the base network over every class
    routes each image to its predicted class's superclass; where that superclass has a specialist,
    the specialist's logits of the superclass's classes decide the class (one switch per such
    superclass in the batch), and p_sub is their softmax.  Elsewhere the base's prediction stands,
    so a bundle without specialists predicts exactly what its base does."""

    def __init__(self, route: Sequence[Tuple[int, int]], specialists: Sequence[int], rows: Sequence[Sequence[int]]):
        """*rows*: per superclass, the head row of each of its classes, in the superclass's order."""
        super().__init__(route)
        self.specialists = set(int(k) for k in specialists)
        self.rows = [list(r) for r in rows]

    def __call__(self, nets, batch):
        trunk = None
        if getattr(nets, "trunk_once", False):  # the trunk once per image; a specialist reruns its tail only
            logits, trunk = nets.base_and_trunk(batch)
        else:
            logits = nets.base_logits(batch)
        probs = masked_softmax(logits, len(self.route))
        out: List[Optional[Prediction]] = [None] * len(batch)
        groups: dict = {}
        p_supers = []
        for i, row in enumerate(probs):
            c = int(np.argmax(row))
            k, j = self.route[c]
            p_super = float(row[self.sup == k].sum())
            p_supers.append(p_super)
            if k in self.specialists:
                groups.setdefault(k, []).append(i)
            else:
                out[i] = of_class(nets.bundle, k, j, p_super, row[c] / p_super)
        for k in sorted(groups):
            idx = groups[k]
            whole = nets.network_logits(batch[idx], k) if trunk is None else nets.tail_logits(trunk[idx], k)
            logits = whole[:, self.rows[k]]
            for i, p in zip(idx, masked_softmax(logits, logits.shape[1])):
                out[i] = nets.prediction(k, p_supers[i], p)
        return [p for p in out if p is not None]
