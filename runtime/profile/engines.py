"""Backends in each engine mode, for profiling.

``one-engine`` is the paper's mode: one refittable network, switched to the base and back
for every routed image.  ``two-engine`` keeps a fixed base network beside one refittable
subclass network.  TensorRT implements both; for ONNX Runtime the two-engine form is two
sessions, the first never switched.
"""

from __future__ import annotations

from ..backends import load_backend
from ..backends.base import BASE
from ..backends.ort import OrtBackend
from ..choices import ENGINE_MODES as MODES
from ..errors import UsageError


class OrtTwoEngine(OrtBackend):
    """A fixed base session plus one switched subclass session."""

    def __init__(self, bundle, **options):
        super().__init__(bundle, **options)
        self.fixed = OrtBackend(bundle, **options)
        self.sub_loaded = BASE

    def switch(self, target: int, force: bool = False) -> bool:
        target = int(target)
        if target == BASE or target == self.sub_loaded:
            changed = target != self.current
            self.current = target
            return changed
        changed = super().switch(target, force)
        self.sub_loaded = self.current
        return changed

    def _infer(self, batch):
        if self.current == BASE:
            return self.fixed._infer(batch)
        return super()._infer(batch)

    def memory(self):
        out = super().memory()
        out["packed_weights_bytes"] += int(self.fixed.weights.nbytes)
        out["base_copy_bytes"] += int(self.fixed.base.nbytes)
        return out

    def close(self):
        self.fixed.close()
        super().close()


def open_backend(name: str, bundle, mode: str = "one-engine", threads: int = 0):
    """The backend *name* ('onnxruntime' or 'tensorrt') in engine *mode*."""
    if mode not in MODES:
        raise UsageError("unknown engine mode {!r}; choose one of {}".format(mode, ", ".join(MODES)))
    if name in ("onnxruntime", "ort"):
        if mode == "two-engine":
            return OrtTwoEngine(bundle, threads=threads)
        return OrtBackend(bundle, threads=threads)
    return load_backend(name, bundle, mode=mode)
