"""A scripted backend: networks are plain functions, so routing can be tested and demonstrated without a bundle.

``FakeBackend`` runs the shared :class:`~.base.Backend` logic (switch bookkeeping, timings,
transactional switches) over a :class:`ScriptedBundle` that only names the hierarchy.  Each
network is ``logits(target, batch) -> (N, head)``; switches are recorded in ``switch_log``.
"""

from __future__ import annotations

from typing import Callable, Collection, List, Optional, Sequence, Tuple

import numpy as np

from ..bundle.reader import Superclass
from ..errors import CodecError
from .base import Backend, head_rows, targets

Logits = Callable[[int, np.ndarray], np.ndarray]


class ScriptedBundle:
    """What the classifier and the backend read from a bundle: the hierarchy and the deltas.

    Reading the delta of a superclass in *broken* fails the way a corrupt delta file does.
    """

    def __init__(
        self,
        hierarchy: Sequence[Tuple[str, Sequence[str]]],
        broken: Collection[int] = (),
        routing=None,
        not_mine: bool = False,
    ):
        self.superclasses = [Superclass(i, name, list(subs)) for i, (name, subs) in enumerate(hierarchy)]
        self.num_superclasses = len(self.superclasses)
        self.not_mine = not_mine  # a "not mine" row after each subclass network's classes
        self.head_width = max(head_rows(self, t) for t in targets(self.num_superclasses))
        self.layout = None
        self.broken = set(broken)
        self.routing = routing  # a runtime.routing.Routing, as a manifest's ``routing`` gives it
        self.kind = "super-sub"  # a Super-Sub bundle (manifest.Manifest.kind)
        self.flat_route: List[Tuple[int, int]] = []

    def read_delta(self, k: int, sparse: bool = False) -> np.ndarray:
        if k in self.broken:
            raise CodecError("delta {} is corrupt".format(k))
        return np.zeros(0, dtype=np.uint8)


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, bundle: ScriptedBundle, logits: Logits, features: Optional[Logits] = None):
        """*features*: ``features(target, batch) -> (N, width)``, the networks' pooled features
        (None: the scripted networks give none)."""
        super().__init__(bundle)
        self.logits = logits
        self.features = features
        self.switch_log: List[int] = []

    def _apply(self, delta) -> None:
        self.switch_log.append(self._target)

    def switch(self, target: int, force: bool = False) -> bool:
        self._target = int(target)
        return super().switch(target, force)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        out = np.asarray(self.logits(self.current, batch), dtype=np.float32)
        if out.shape != (len(batch), self.bundle.head_width):
            raise ValueError("scripted logits must have shape {}".format((len(batch), self.bundle.head_width)))
        return out

    def _infer_features(self, batch: np.ndarray):
        if self.features is None:
            return super()._infer_features(batch)
        return self._infer(batch), np.asarray(self.features(self.current, batch), dtype=np.float32)
