"""The two-stage Super-Sub classifier on one refittable backend: the networks' stages, run on
demand and counted, and the routing policy (:mod:`.policies`, one object each) that decides
which of them run for each image.

``passes`` counts the subclass network runs per image: ``extra_passes_per_image`` is what
top-k routing costs beyond one subclass network per image.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from . import policies
from .backends.base import BASE, head_rows
from .bundle import learned_routing, routing
from .choices import POLICIES
from .errors import UsageError
from .prediction import Prediction, masked_softmax, of_class

__all__ = ["POLICIES", "Prediction", "SuperSubClassifier", "masked_softmax"]


class SuperSubClassifier:
    def __init__(
        self,
        backend,
        policy: str = "batched",
        gate: Optional[float] = None,
        k: Optional[int] = None,
        interval: int = 15,
        beta: Optional[float] = None,
        specialists: bool = True,
    ):
        """``gate``, ``k``, ``beta``: None takes the bundle's ``routing`` for ``topk`` (else the
        defaults of :mod:`.routing`).  ``specialists`` False: a flat bundle's base network alone, its
        specialists unused (what they add is measured against that)."""
        if policy not in POLICIES:
            raise UsageError("unknown policy {!r}; choose one of {}".format(policy, ", ".join(POLICIES)))
        self.backend = backend
        self.bundle = backend.bundle
        self.policy = policy
        stored = self.bundle.routing if policy == "topk" else None
        self.routing = routing.resolve(stored, gate, k, beta)
        self.gate, self.k, self.beta = self.routing.gate, self.routing.k, self.routing.beta
        self.interval = int(interval)
        self.use_specialists = bool(specialists)
        self.n_super = self.bundle.num_superclasses
        self.route = self._policy()
        self.images = 0  # images classified
        self.passes = 0  # subclass-network runs, summed over images

    @property
    def extra_passes_per_image(self) -> float:
        """Subclass-network runs per image beyond the first (0 for every policy but ``topk``)."""
        return (self.passes - self.images) / self.images if self.images else 0.0

    def _policy(self) -> policies.Policy:
        if self.bundle.kind == "flat" and self.bundle.specialists and self.use_specialists:
            row = {c: i for i, c in enumerate(self.bundle.model.flat_classes)}
            rows = [[row[c] for c in s.subclasses] for s in self.bundle.superclasses]
            return policies.Specialists(self.bundle.flat_route, self.bundle.specialists, rows)
        if self.bundle.kind == "flat":
            return policies.Flat(self.bundle.flat_route)
        if self.policy == "batched":
            return policies.Batched()
        if self.policy == "sticky":
            return policies.Sticky(self.gate, self.interval)
        if self.policy == "topk" and self.routing.learned is not None and self.n_super > 1:
            return policies.Learned(self.routing, [len(s.subclasses) for s in self.bundle.superclasses])
        if self.policy == "topk":
            return policies.TopK(self.routing)
        return policies.PerImage()

    # -- stages ----------------------------------------------------------------------------
    def _logits(self, batch: np.ndarray, target: int, features: bool = False):
        """Network *target*'s logits (a subclass network's run counted in ``passes``); with
        *features*, (logits, its pooled features)."""
        if target != BASE:
            self.passes += len(batch)
        self.backend.switch(target)
        return self.backend.infer_features(batch) if features else self.backend.infer(batch)

    def base_logits(self, batch: np.ndarray) -> np.ndarray:
        return self._logits(batch, BASE)

    @property
    def trunk_once(self) -> bool:
        return bool(self.backend.trunk_once)

    def base_and_trunk(self, batch: np.ndarray):
        """(the base's logits, the trunk's output): the trunk every network of the bundle shares."""
        self.backend.switch(BASE)
        return self.backend.infer_trunk(batch)

    def tail_logits(self, trunk: np.ndarray, k: int) -> np.ndarray:
        """Network *k*'s logits from the trunk's output: only its tail runs."""
        self.passes += len(trunk)
        self.backend.switch(k)
        return self.backend.infer_tail(trunk)

    def network_logits(self, batch: np.ndarray, k: int) -> np.ndarray:
        """Network *k*'s whole head (a flat bundle's specialist: every class's row)."""
        return self._logits(batch, k)

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

    def prediction(self, k: int, p_super: float, p_sub: np.ndarray) -> Prediction:
        """Superclass *k*'s prediction: the class of *p_sub*'s largest probability."""
        j = int(np.argmax(p_sub))
        return of_class(self.bundle, k, j, p_super, p_sub[j], p_sub)

    # -- policies --------------------------------------------------------------------------
    def classify(self, batch: np.ndarray) -> List[Prediction]:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4:
            raise UsageError("expected a batch of shape (N, C, H, W), got {}".format(batch.shape))
        self.images += len(batch)
        return self.route(self, batch)

    def reset(self) -> None:
        """Forget what the policy carries between frames (sticky: call at a scene cut or a new stream)."""
        self.route.reset()
