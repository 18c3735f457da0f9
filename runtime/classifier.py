"""The two-stage Super-Sub classifier on one refittable backend.

Routing policies (all measured by the profiler, none assumed):

* ``per-image``  - the paper's: for each image, base network, then its subclass network;
* ``batched``    - superclass-batched: one base pass over the batch, then one switch per
  predicted superclass for the images routed to it;
* ``sticky``     - for video: the subclass network of the last routed frame stays loaded
  and classifies the next frames alone while its confidence stays >= ``gate``; the base
  network re-routes every ``interval`` frames or when the confidence drops;
* ``topk``       - confidence-gated: when the superclass confidence is below a gate, the
  top-k superclasses are each tried and the best p_super^beta x p_sub wins (beta = 1:
  Chennupati et al., equation 2; gate, k and beta from the bundle's ``routing``, see
  :mod:`.routing`).  With overlapping clusters a class can be reached through several
  superclasses, so a second route can recover a routing error of the superclass network.
  Where the bundle's routing carries a learned gate and pair combiners
  (:mod:`.learned_routing`), those decide when to take the second route and what to answer.

``passes`` counts the subclass network runs per image: ``extra_passes_per_image`` is what
top-k routing costs beyond one subclass network per image.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from .bundle import learned_routing, routing
from .backends.base import BASE, head_rows
from .choices import POLICIES
from .errors import UsageError


def masked_softmax(logits: np.ndarray, n_valid: int) -> np.ndarray:
    """Softmax over the first *n_valid* logits of each row (the rest of the head is masked)."""
    z = logits[..., :n_valid].astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class Prediction:
    """What the classifier predicts for one image: superclass, fine class (``label``), confidences.

    ``to_dict`` names the predicted fine class ``class``; nothing here is ground truth.
    """

    __slots__ = ("superclass", "superclass_name", "subclass", "label", "p_super", "p_sub")

    def __init__(self, superclass, superclass_name, subclass, label, p_super, p_sub):
        self.superclass = superclass
        self.superclass_name = superclass_name
        self.subclass = subclass
        self.label = label
        self.p_super = float(p_super)
        self.p_sub = float(p_sub)

    @property
    def confidence(self) -> float:
        return self.p_super * self.p_sub

    def to_dict(self) -> dict:
        return {
            "superclass": self.superclass_name,
            "class": self.label,
            "confidence": self.confidence,
            "p_super": self.p_super,
            "p_sub": self.p_sub,
            "superclass_index": self.superclass,
            "subclass_index": self.subclass,
        }

    def __repr__(self):
        return "Prediction({}/{}, {:.3f})".format(self.superclass_name, self.label, self.confidence)


class SuperSubClassifier:
    def __init__(
        self,
        backend,
        policy: str = "batched",
        gate: Optional[float] = None,
        k: Optional[int] = None,
        interval: int = 15,
        beta: Optional[float] = None,
    ):
        """``gate``, ``k``, ``beta``: None takes the bundle's ``routing`` for ``topk`` (else the
        defaults of :mod:`.routing`)."""
        if policy not in POLICIES:
            raise UsageError("unknown policy {!r}; choose one of {}".format(policy, ", ".join(POLICIES)))
        self.backend = backend
        self.bundle = backend.bundle
        self.policy = policy
        stored = self.bundle.routing if policy == "topk" else None
        self.routing = routing.resolve(stored, gate, k, beta)
        self.gate, self.k, self.beta = self.routing.gate, self.routing.k, self.routing.beta
        self.interval = int(interval)
        self.reset()
        self.n_super = self.bundle.num_superclasses
        self.images = 0  # images classified
        self.passes = 0  # subclass-network runs, summed over images

    @property
    def extra_passes_per_image(self) -> float:
        """Subclass-network runs per image beyond the first (0 for every policy but ``topk``)."""
        return (self.passes - self.images) / self.images if self.images else 0.0

    # -- stages ----------------------------------------------------------------------------
    def _logits(self, batch: np.ndarray, target: int, features: bool = False):
        """Network *target*'s logits (a subclass network's run counted in ``passes``); with
        *features*, (logits, its pooled features)."""
        if target != BASE:
            self.passes += len(batch)
        self.backend.switch(target)
        return self.backend.infer_features(batch) if features else self.backend.infer(batch)

    def superclass_probs(self, batch: np.ndarray) -> np.ndarray:
        return masked_softmax(self._logits(batch, BASE), self.n_super)

    def subclass_probs(self, batch: np.ndarray, k: int) -> np.ndarray:
        """Subclass network *k*'s probabilities of its classes; with a "not mine" row, the softmax
        takes it in too, so p_sub falls on an image the network says is not its own."""
        n = len(self.bundle.superclasses[k].subclasses)
        return masked_softmax(self._logits(batch, k), head_rows(self.bundle, k))[:, :n]

    def subclass_evidence(self, batch: np.ndarray, k: int, features: bool = False):
        """(Subclass network *k*'s log-softmax over its classes, then its "not mine" row
        (:data:`.learned_routing.NO_ROW` where it has none); its pooled features, with *features*,
        else None)."""
        n = len(self.bundle.superclasses[k].subclasses)
        out = self._logits(batch, k, features)
        logits, feats = out if features else (out, None)
        lq = learned_routing.log_softmax(logits, head_rows(self.bundle, k))
        return learned_routing.with_not_mine(lq, n), feats

    def _pred(self, k: int, p_super: float, p_sub: np.ndarray) -> Prediction:
        s = self.bundle.superclasses[k]
        j = int(np.argmax(p_sub))
        return Prediction(k, s.name, j, s.subclasses[j], p_super, p_sub[j])

    # -- policies --------------------------------------------------------------------------
    def classify(self, batch: np.ndarray) -> List[Prediction]:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4:
            raise UsageError("expected a batch of shape (N, C, H, W), got {}".format(batch.shape))
        self.images += len(batch)
        if self.bundle.kind == "flat":
            return self._flat(batch)
        if self.policy == "batched":
            return self._batched(batch)
        if self.policy == "topk":
            return [self._topk(batch[i : i + 1]) for i in range(len(batch))]
        out = []
        for i in range(len(batch)):
            x = batch[i : i + 1]
            if self.policy == "sticky":
                out.append(self._sticky(x))
                continue
            ps = self.superclass_probs(x)[0]
            k = int(np.argmax(ps))
            out.append(self._pred(k, ps[k], self.subclass_probs(x, k)[0]))
        return out

    def _flat(self, batch: np.ndarray) -> List[Prediction]:
        """A flat bundle, whatever the policy: one pass of its one network.  The superclass is the
        predicted class's (primary) one; p_super sums its classes' probabilities, so p_super x p_sub
        is the class's probability."""
        p = masked_softmax(self._logits(batch, BASE), len(self.bundle.flat_route))
        sup = np.array([k for k, _ in self.bundle.flat_route])
        out = []
        for row in p:
            c = int(np.argmax(row))
            k, j = self.bundle.flat_route[c]
            p_super = float(row[sup == k].sum())
            s = self.bundle.superclasses[k]
            out.append(Prediction(k, s.name, j, s.subclasses[j], p_super, row[c] / p_super))
        return out

    def reset(self) -> None:
        """Forget the sticky state (call at a scene cut or a new stream)."""
        self._sticky_k: Optional[int] = None
        self._sticky_p = 0.0
        self._since = 0

    def _sticky(self, x: np.ndarray) -> Prediction:
        k = getattr(self, "_sticky_k", None)
        if k is not None and self._since < self.interval:
            p_sub = self.subclass_probs(x, k)[0]
            if float(p_sub.max()) >= self.gate:
                self._since += 1
                return self._pred(k, self._sticky_p, p_sub)
        ps = self.superclass_probs(x)[0]
        k = int(np.argmax(ps))
        self._sticky_k, self._sticky_p, self._since = k, float(ps[k]), 1  # frames served since routing
        return self._pred(k, ps[k], self.subclass_probs(x, k)[0])

    def _batched(self, batch: np.ndarray) -> List[Prediction]:
        ps = self.superclass_probs(batch)
        ks = ps.argmax(axis=1)
        out: List[Optional[Prediction]] = [None] * len(batch)
        # Serve the group of the currently loaded subclass first, if any, to save a switch.
        order = sorted(set(int(k) for k in ks))
        for k in order:
            idx = np.nonzero(ks == k)[0]
            probs = self.subclass_probs(batch[idx], k)
            for n, i in enumerate(idx):
                out[i] = self._pred(k, ps[i, k], probs[n])
        return out  # type: ignore[return-value]

    def _topk(self, x: np.ndarray) -> Prediction:
        if self.routing.learned is not None and self.n_super > 1:
            return self._learned(x)
        ps = self.superclass_probs(x)[0]
        order = np.argsort(-ps)
        cands = [int(order[0])]
        if ps[order[0]] < self.gate:
            cands = [int(k) for k in order[: self.k]]
        best: Optional[Prediction] = None
        best_score = 0.0
        for k in cands:
            p = self._pred(k, ps[k], self.subclass_probs(x, k)[0])
            s = routing.score(p.p_super, p.p_sub, self.beta)
            if best is None or s > best_score:
                best, best_score = p, s
        assert best is not None  # cands is never empty
        return best

    def _learned(self, x: np.ndarray) -> Prediction:
        """Gated top-2 with the bundle's learned gate and pair combiners (equation 2 for a pair
        without a combiner)."""
        learned = self.routing.learned
        assert learned is not None
        lp = learned_routing.log_softmax(self._logits(x, BASE), self.n_super)[0]
        ps = np.exp(lp)
        r1, r2 = (int(r) for r in np.argsort(-lp, kind="stable")[:2])
        n = [len(self.bundle.superclasses[r].subclasses) for r in (r1, r2)]
        lq, f, use = {}, {}, learned.features > 0  # log outputs, features (None unless used)
        lq[r1], f[r1] = self.subclass_evidence(x, r1, use)
        first = self._pred(r1, ps[r1], np.exp(lq[r1][0, : n[0]]))
        if learned.gate_score(lp, r1, r2, lq[r1][0], n[0]) <= learned.threshold:
            return first
        lq[r2], f[r2] = self.subclass_evidence(x, r2, use)
        a, b = min(r1, r2), max(r1, r2)
        fa, fb = (f[a][0], f[b][0]) if use else (None, None)
        pick = learned.combine(a, b, lp, lq[a][0], lq[b][0], len(self.bundle.superclasses[a].subclasses), fa, fb)
        if pick is None:  # equation 2, in logs as the combiners were chosen with
            s1, s2 = (self.beta * lp[r] + lq[r][0, :m].max() for r, m in zip((r1, r2), n))
            return self._pred(r2, ps[r2], np.exp(lq[r2][0, : n[1]])) if s2 > s1 else first
        k, j = pick
        s = self.bundle.superclasses[k]
        return Prediction(k, s.name, j, s.subclasses[j], ps[k], np.exp(lq[k][0, j]))
