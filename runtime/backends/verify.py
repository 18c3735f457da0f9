"""A device backend's outputs against ONNX Runtime on the bundle's samples (the golden batch).

:func:`compare` is the one comparison ``edgetool doctor`` and ``--verify-switch`` make: top-1 on
every sample, and the largest difference relative to the reference's logit range, over the head
rows the network uses.  :class:`SwitchVerifier` wraps a backend so that the first switch to each
network (the base network, or a subclass network's delta) is followed by the golden batch on the
backend and in ONNX Runtime; a disagreement stops with one error line, before the network's
output is used.  A refit that left stale weights in some layer (a tensor the engine did not take,
a layer whose weights TensorRT could not refit) shows here as a disagreement.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ..errors import BackendError, UsageError
from .base import BASE, head_rows

ATOL_REL = 0.05  # the largest difference allowed, as a fraction of the reference's logit range


class VerifyError(BackendError):
    """A network on the device disagrees with ONNX Runtime on the bundle's samples."""


def compare(out: np.ndarray, ref: np.ndarray, rows: int) -> Tuple[bool, float]:
    """(top-1 agrees on every sample, max |out - ref| / max |ref|) over the first *rows* head rows."""
    a, r = np.asarray(out)[:, :rows], np.asarray(ref)[:, :rows]
    agree = bool((a.argmax(1) == r.argmax(1)).all())
    return agree, float(np.abs(a - r).max() / max(1e-6, float(np.abs(r).max())))


def describe(bundle, target: int) -> str:
    if target == BASE:
        return "the base network"
    return "subclass network {} ({})".format(target, bundle.superclasses[target].name)


class Reference:
    """ONNX Runtime's logits of each network on *samples*, each computed on first use."""

    def __init__(self, bundle, samples: np.ndarray, backend=None):
        if backend is None:
            from .ort import OrtBackend

            backend = OrtBackend(bundle)
        self.backend, self.samples = backend, samples
        self.cache: Dict[int, np.ndarray] = {}

    def logits(self, target: int) -> np.ndarray:
        if target not in self.cache:
            self.backend.switch(target)
            self.cache[target] = self.backend.infer(self.samples)
        return self.cache[target]

    def close(self) -> None:
        self.backend.close()


class SwitchVerifier:
    """*backend*, whose first switch to each network is checked against *reference* (``--verify-switch``).

    Everything else goes to the wrapped backend unchanged.  *report* gets one line per network checked."""

    def __init__(self, backend, reference: Reference, atol_rel: float = ATOL_REL, report: Optional[Callable] = None):
        self._backend, self.reference, self.atol_rel = backend, reference, atol_rel
        self.report = report or (lambda line: None)
        self.verified: Dict[int, float] = {}  # network -> its max relative difference

    def switch(self, target: int, force: bool = False) -> bool:
        changed = self._backend.switch(target, force)
        target = int(target)
        if target not in self.verified:
            self.verify(target)
        return changed

    def verify(self, target: int) -> float:
        """The golden batch on the backend's network *target* (already switched to) against ONNX Runtime's."""
        b = self._backend.bundle
        samples = self.reference.samples
        agree, worst = compare(self._backend.infer(samples), self.reference.logits(target), head_rows(b, target))
        line = "verify-switch: {} on {}, {} samples: top-1 {}, max |diff| {:.2%} of ONNX Runtime's logit range".format(
            describe(b, target), self._backend.name, len(samples), "agrees" if agree else "DISAGREES", worst
        )
        if not agree or worst > self.atol_rel:
            raise VerifyError("{} (limit {:.0%}): its outputs are not the network's".format(line, self.atol_rel))
        self.verified[target] = worst
        self.report(line)
        return worst

    def close(self) -> None:
        try:
            self._backend.close()
        finally:
            self.reference.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, name):
        return getattr(self._backend, name)


def verifying(backend, bundle, report: Optional[Callable] = None, reference_backend=None) -> SwitchVerifier:
    """*backend* with ``--verify-switch``: needs the bundle's samples (and ONNX Runtime for the reference)."""
    samples = bundle.samples()
    if samples is None:
        raise UsageError("--verify-switch compares on the bundle's samples.npy, and this bundle has none")
    return SwitchVerifier(backend, Reference(bundle, samples, reference_backend), report=report)
