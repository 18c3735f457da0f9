"""Scheduling for streams: sticky superclass with hysteresis, scene cuts, label smoothing.

The stream classifier extends :class:`~edgetool.runtime.classifier.SuperSubClassifier` and
keeps its stages, its ``per-image``, ``batched`` and ``topk`` policies, and its choice of the
policy object: a flat bundle gets :class:`~edgetool.runtime.policies.Flat` whatever the stream
policy asked (one network, nothing to route; ``superclass`` reduces its prediction to the
superclass), and its settings say ``flat``.  Its ``sticky``
policy (:class:`StickyStream`) is the classifier's sticky policy with hysteresis over runs of
frames (the subclass network of the routed superclass stays loaded and classifies the next
frames alone):

* **enter** - a superclass pass moves to a *different* superclass only when the base network
  gives it p_super >= ``enter``; below that the loaded subclass network stays (at the start
  and after a scene cut the top superclass is taken as is; ``enter`` > 1 keeps the superclass
  until a scene cut);
* **leave** - a frame whose subclass confidence p_sub falls below ``leave`` gets a fresh
  superclass pass; this is armed once the loaded network has served a frame at or above
  ``leave``, so an unsure but unchanged scene does not re-route on every frame;
* **interval** - a fresh superclass pass at least every ``interval`` frames;
* **scene cut** - a fresh superclass pass when the frame changes by more than a threshold.

``superclass`` (:class:`Superclass`) runs the base network alone (superclass labels, no switch).  A subclass
network whose delta fails to load is reported once; its frames get superclass labels from
the base network, which keeps serving.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..choices import STREAM_POLICIES
from .. import policies
from ..classifier import POLICIES, SuperSubClassifier
from ..policies import Policy
from ..prediction import Prediction
from ..errors import SwitchError, UsageError
from ..bundle.routing import check_options


def check_settings(
    policy: str, enter: float, leave: float, interval: int, k: Optional[int] = None, gate=None, beta=None
) -> None:
    """One error line for a stream setting out of range."""
    if policy not in STREAM_POLICIES:
        raise UsageError("unknown policy {!r}; choose one of {}".format(policy, ", ".join(STREAM_POLICIES)))
    if not (0.0 <= leave <= 1.0 and enter >= 0.0):
        raise UsageError("--leave must be in [0, 1] and --enter >= 0 (got leave {}, enter {})".format(leave, enter))
    if interval < 1:
        raise UsageError("--interval must be >= 1")
    check_options(gate, k, beta)


class StickyStream(Policy):
    """The stream's sticky policy with hysteresis (``enter``, ``leave``, ``interval``, scene cuts),
    over consecutive frames: ``stream(nets, frames, cuts)``; ``routes`` counts superclass passes."""

    def __init__(self, enter: float, leave: float, interval: int):
        self.enter, self.leave, self.interval = float(enter), float(leave), int(interval)
        self.routes = 0
        self.reset()

    def reset(self) -> None:
        self.k: Optional[int] = None  # the loaded subclass network
        self.p_super = 0.0  # its superclass probability when it was routed
        self.since = 0  # frames served since routing
        self.armed = False  # the loaded network has served a frame at or above leave

    def __call__(self, nets, batch: np.ndarray) -> List[Prediction]:
        return self.stream(nets, batch)

    def stream(self, nets, xs: np.ndarray, cuts: Sequence[bool] = ()) -> List[Prediction]:
        n = len(xs)
        cuts = list(cuts) or [False] * n
        out: List[Optional[Prediction]] = [None] * n
        i = 0
        while i < n:
            if cuts[i] and out[i] is None:
                self.reset()
            if self.k is None or self.since >= self.interval:
                out[i] = self._route(nets, xs[i : i + 1])
                i += 1
                continue
            j = i + 1  # frames [i, j) go through the loaded subclass network in one call
            while j < n and not cuts[j] and j - i < self.interval - self.since:
                j += 1
            probs = nets.subclass_probs(xs[i:j], self.k)
            for f in range(i, j):
                p = nets.prediction(self.k, self.p_super, probs[f - i])
                if p.label is None or (self.armed and p.p_sub < self.leave):
                    self.since = self.interval  # frame f leaves: it is routed afresh
                    break
                self.armed = self.armed or p.p_sub >= self.leave
                out[f] = p
                self.since += 1
                i = f + 1
        return out  # type: ignore[return-value]

    def _route(self, nets, x: np.ndarray) -> Prediction:
        """A superclass pass; a different superclass is adopted only at p_super >= enter (hysteresis)."""
        self.routes += 1
        ps = nets.superclass_probs(x)[0]
        k = int(np.argmax(ps))
        if self.k is not None and k != self.k and ps[k] < self.enter:
            k = self.k
        p = nets.prediction(k, ps[k], nets.subclass_probs(x, k)[0])
        if p.label is None:
            self.reset()
        else:
            self.k, self.p_super, self.since = k, float(ps[k]), 1
            self.armed = p.p_sub >= self.leave
        return p


class Superclass(Policy):
    """The base network alone: each frame's top superclass, with no fine label and no switch."""

    def __call__(self, nets, batch):
        ps = nets.superclass_probs(batch)
        return [nets.prediction(int(k), p[int(k)], np.zeros(0, np.float32)) for k, p in zip(ps.argmax(axis=1), ps)]


class StreamClassifier(SuperSubClassifier):
    def __init__(
        self,
        backend,
        policy: str = "sticky",
        enter: float = 0.6,
        leave: float = 0.4,
        interval: int = 30,
        gate: Optional[float] = None,
        k: Optional[int] = None,
        beta: Optional[float] = None,
        on_error: Optional[Callable[[str], None]] = None,
    ):
        check_settings(policy, enter, leave, interval, k, gate, beta)
        self.stream_policy = policy
        self.sticky = StickyStream(enter, leave, interval)
        super().__init__(
            backend, policy=policy if policy in POLICIES else "per-image", gate=gate, k=k, interval=interval, beta=beta
        )
        self.on_error = on_error or (lambda msg: None)
        self.failed: Dict[int, str] = {}  # subclass index -> the error, reported once

    def _policy(self) -> Policy:
        """The policy object of the stream policy; a flat bundle's is :class:`~..policies.Flat`, or
        :class:`~..policies.Specialists` when it has specialists (whatever ``--policy`` asked, but
        ``superclass``)."""
        if self.bundle.kind == "flat" and self.bundle.specialists and self.stream_policy != "superclass":
            return super()._policy()
        if self.bundle.kind == "flat":
            return policies.Flat(self.bundle.flat_route, fine=self.stream_policy != "superclass")
        if self.stream_policy == "sticky":
            return self.sticky
        if self.stream_policy == "superclass":
            return Superclass()
        return super()._policy()

    @property
    def flat(self) -> bool:
        """A flat bundle: one network, no routing policy (whatever ``--policy`` asked)."""
        return self.bundle.kind == "flat"

    @property
    def routes(self) -> Optional[int]:
        """Superclass passes of the sticky policy (None under any other, and for a flat bundle)."""
        return self.sticky.routes if self.route is self.sticky else None

    def settings(self) -> dict:
        if self.flat:  # nothing to route: say so, and what was asked (superclass still reduces the labels)
            return {"policy": "flat", "requested_policy": self.stream_policy}
        s: Dict[str, Any] = {"policy": self.stream_policy}
        if self.stream_policy == "sticky":
            s.update(enter=self.sticky.enter, leave=self.sticky.leave, interval=self.sticky.interval)
        if self.stream_policy == "topk":
            s.update(gate=self.gate, k=self.k, beta=self.beta, routing=self.routing.chosen_on)
        return s

    # -- degraded subclass networks -----------------------------------------------------------
    def subclass_probs(self, batch: np.ndarray, k: int) -> np.ndarray:
        """As the classifier's, but a failing delta leaves an empty row per frame (superclass only)."""
        if k not in self.failed:
            try:
                return super().subclass_probs(batch, k)
            except SwitchError as exc:
                self.failed[k] = str(exc)
                self.on_error(str(exc))
        return np.zeros((len(batch), 0), dtype=np.float32)

    def prediction(self, k: int, p_super: float, p_sub: np.ndarray) -> Prediction:
        if p_sub.size == 0:
            return Prediction(k, self.bundle.superclasses[k].name, None, None, p_super, 1.0)
        return super().prediction(k, p_super, p_sub)

    # -- streams -------------------------------------------------------------------------------
    def classify_stream(self, batch: np.ndarray, cuts: Sequence[bool]) -> List[Prediction]:
        """Classify consecutive frames through the policy object; ``cuts[i]`` marks a scene cut before frame i."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4:
            raise UsageError("expected a batch of shape (N, C, H, W), got {}".format(batch.shape))
        self.images += len(batch)
        return self.route.stream(self, batch, cuts)


class SceneCut:
    """Flags a cut when the mean absolute change of the network-sized frame exceeds *threshold* (0..1)."""

    def __init__(self, threshold: float = 0.08):
        if not 0.0 <= threshold <= 1.0:
            raise UsageError("--scene-cut must be in [0, 1] (0 turns it off)")
        self.threshold = float(threshold)
        self.prev: Optional[np.ndarray] = None
        self.cuts = 0

    def __call__(self, small_uint8: np.ndarray) -> bool:
        cur = small_uint8.astype(np.int16)
        cut = False
        if self.prev is not None and self.threshold > 0 and self.prev.shape == cur.shape:
            cut = float(np.abs(cur - self.prev).mean()) / 255.0 > self.threshold
        self.prev = cur
        self.cuts += int(cut)
        return cut


class Smoother:
    """Temporal smoothing of the labels, as jetson-inference's ``--smoothing``.

    *factor* 0 turns it off; a factor >= 1 is a number of frames (weight 1/factor for the
    newest); a factor in (0, 1) is the newest frame's weight.  Every fine label (and each
    superclass alone, for superclass-only frames) keeps an exponential moving average of
    its confidence; the label with the highest average is reported.  A scene cut resets it.
    """

    def __init__(self, bundle, factor: float = 0.0):
        if factor < 0:
            raise UsageError("--smoothing must be >= 0")
        self.factor = float(factor)
        self.alpha = 0.0 if factor == 0 else (1.0 / factor if factor >= 1 else float(factor))
        self.keys: List[Tuple[Any, Any, Any, Any]] = []
        for s in bundle.superclasses:
            self.keys += [(s.index, j, s.name, name) for j, name in enumerate(s.subclasses)]
            self.keys.append((s.index, None, s.name, None))
        self.index = {(k, j): n for n, (k, j, _, _) in enumerate(self.keys)}
        self.scores: Optional[np.ndarray] = None

    @property
    def active(self) -> bool:
        return self.alpha > 0

    def reset(self) -> None:
        self.scores = None

    def __call__(self, p: Prediction) -> dict:
        """The smoothed superclass, predicted class and score after frame prediction *p*."""
        x = np.zeros(len(self.keys), dtype=np.float64)
        x[self.index[(p.superclass, p.subclass)]] = p.confidence
        self.scores = x if self.scores is None else (1.0 - self.alpha) * self.scores + self.alpha * x
        best = int(np.argmax(self.scores))
        _, _, sname, label = self.keys[best]
        return {"superclass": sname, "class": label, "confidence": float(self.scores[best])}
