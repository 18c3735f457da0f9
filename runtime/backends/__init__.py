"""Inference backends: one small interface (see :class:`base.Backend`)."""

from __future__ import annotations

from ..choices import BACKEND_ALIASES, BACKENDS
from ..errors import UsageError


def load_backend(name, bundle, **options):
    """Create the backend *name* ('onnxruntime' or 'tensorrt') for an opened bundle."""
    name = BACKEND_ALIASES.get(name, name)
    if name == "onnxruntime":
        from .ort import OrtBackend

        return OrtBackend(bundle, **options)
    if name == "tensorrt":
        from ..trt.backend import TrtBackend

        return TrtBackend.from_bundle(bundle, **options)
    raise UsageError("unknown backend {!r}; choose one of {}".format(name, ", ".join(BACKENDS)))
