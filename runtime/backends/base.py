"""The backend interface shared by ONNX Runtime and TensorRT.

A backend loads a bundle, runs batches, switches to the base network or to subclass
network *i*, and reports its own timings and memory.  A switch is transactional: the
delta is read, verified and decoded before any weight is touched, so a failed switch
leaves the previous weights serving.  A delta stored by the ``sparse`` codec is read as a
:class:`~edgetool.runtime.bundle.sparse_codec.SparseDelta` and applied in place, never expanded.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import BackendError, BundleError, CodecError, SwitchError
from ..bundle.packed import Delta

BASE = -1  # switch target for the superclass (base) network


def targets(num_superclasses: int) -> List[int]:
    """Every switch target of a bundle: the base network, then each subclass network."""
    return [BASE] + list(range(num_superclasses))


def head_rows(bundle, target: int) -> int:
    """The head rows network *target* uses: the superclasses (the base network), or a subclass
    network's classes and its "not mine" row where the bundle has one."""
    if target == BASE:
        return bundle.num_superclasses
    return len(bundle.superclasses[target].subclasses) + int(bundle.not_mine)


class Timings:
    """Per-phase wall-clock samples in milliseconds."""

    def __init__(self):
        self.samples: Dict[str, List[float]] = {}

    def add(self, phase: str, ms: float) -> None:
        self.samples.setdefault(phase, []).append(ms)

    def clear(self) -> None:
        self.samples.clear()

    def summary(self) -> Dict[str, dict]:
        return {k: summarize(v) for k, v in self.samples.items()}


def summarize(values) -> dict:
    """trtexec-style statistics of a list of milliseconds."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"count": 0}
    return {
        "count": int(a.size),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
        "p90": float(np.percentile(a, 90)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
    }


class Backend:
    name = "base"

    def __init__(self, bundle):
        self.bundle = bundle
        self.layout = bundle.layout
        self.current: int = BASE
        self.serving = True  # False: a failed switch could not restore any network
        self.timings = Timings()
        self.switch_count = 0

    # -- to implement ---------------------------------------------------------------------
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _infer_features(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(logits, the network's ``features`` output); backends whose model has none say so."""
        raise BackendError("the {} backend gives no network features".format(self.name))

    def _apply(self, delta: Optional[Delta]) -> None:
        """Make the weights base (+ delta); must not fail once called with a valid delta."""
        raise NotImplementedError

    def _weights_unknown(self) -> None:
        """A failed apply may have left the weights anything: the next apply rewrites them whole."""

    def memory(self) -> dict:
        return {}

    def close(self) -> None:
        pass

    @property
    def trunk_once(self) -> bool:
        """Whether the backend runs a specialist's tail alone on the trunk's output (:meth:`infer_tail`)."""
        return False

    def infer_trunk(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        raise BackendError("{} reruns the whole network for a specialist".format(self.name))

    def infer_tail(self, trunk: np.ndarray) -> np.ndarray:
        raise BackendError("{} reruns the whole network for a specialist".format(self.name))

    # -- shared ------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._timed(self._infer, batch)

    def infer_features(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(logits, pooled features) of the serving network: the graph's second output, which a
        learned router's pair combiners may take in."""
        return self._timed(self._infer_features, batch)

    def _timed(self, run, batch: np.ndarray):
        if not self.serving:
            raise BackendError(
                "no network is serving: a failed switch could not restore the weights; reopen the bundle"
            )
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        t0 = time.perf_counter()
        out = run(batch)
        self.timings.add("infer", (time.perf_counter() - t0) * 1e3)
        return out

    def switch(self, target: int, force: bool = False) -> bool:
        """Serve the base network (``BASE``) or subclass network *target*.

        Returns False when *target* already serves (no work done) unless *force*.  The delta
        is read, verified and decoded before any weight changes; if applying it fails, the
        previous network is re-applied (bit-exact), or failing that the base network, and the
        error says which one serves.
        """
        target = int(target)
        if target == self.current and self.serving and not force:
            return False
        t0 = time.perf_counter()
        if target == BASE:
            delta = None
        else:
            try:
                delta = self.bundle.read_delta(target, sparse=True)
            except (BundleError, CodecError) as exc:
                raise SwitchError(
                    "switch to subclass {} failed, still serving {}: {}".format(
                        target, self.describe(self.current), exc
                    )
                ) from None
        t1 = time.perf_counter()
        try:
            self._apply(delta)
        except BaseException as exc:
            err = self._recover(target, exc)
            if not isinstance(exc, Exception):
                raise
            raise err from None
        t2 = time.perf_counter()
        self.current = target
        self.serving = True  # the decoded delta is not kept: a recovery reads it again
        self.switch_count += 1
        self.timings.add("decode", (t1 - t0) * 1e3)
        self.timings.add("apply", (t2 - t1) * 1e3)
        self.timings.add("switch", (t2 - t0) * 1e3)
        return True

    def _recover(self, target: int, exc: BaseException) -> BackendError:
        """After a failed apply: put the previous weights back, else the base's, else say none serve."""
        what = "switch to {} failed while applying its weights ({}: {})".format(
            self.describe(target), type(exc).__name__, str(exc)[:200]
        )
        previous = self.describe(self.current if self.serving else None)
        self._weights_unknown()
        if self.serving:
            try:
                self._apply(None if self.current == BASE else self.bundle.read_delta(self.current, sparse=True))
                return SwitchError("{}; still serving {}".format(what, previous))
            except Exception:
                pass
        try:
            self._apply(None)
            self.current, self.serving = BASE, True
            return SwitchError("{}; {} could not be restored, so the base network serves now".format(what, previous))
        except Exception as again:
            self.current, self.serving = BASE, False
            return BackendError(
                "{}; restoring the base network failed too ({}); no network serves".format(what, str(again)[:200])
            )

    def describe(self, target: Optional[int]) -> str:
        if target is None:
            return "no network"
        if target == BASE:
            return "the base network"
        return "subclass network {} ({})".format(target, self.bundle.superclasses[target].name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
