"""Inference backends: one small interface (see :class:`base.Backend`)."""
from __future__ import annotations

from ..errors import UsageError

BACKENDS = ("onnxruntime", "tensorrt")


def load_backend(name, bundle, **options):
    """Create the backend *name* ('onnxruntime' or 'tensorrt') for an opened bundle."""
    if name in ("onnxruntime", "ort"):
        from .ort import OrtBackend

        return OrtBackend(bundle, **options)
    if name in ("tensorrt", "trt"):
        from .trt import TrtBackend

        return TrtBackend(bundle, **options)
    raise UsageError("unknown backend {!r}; choose one of {}".format(name, ", ".join(BACKENDS)))
