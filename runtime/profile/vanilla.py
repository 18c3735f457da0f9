"""The comparison points of a profile, built from the same bundle in the same run.

* ``single``  - the base network alone, one ONNX Runtime session with plain initializers
  (what a flat, one-network deployment keeps resident);
* ``vanilla`` - N+1 sessions resident: the base network and every subclass network
  materialised from its delta (base + delta_i as the session's own initializers), so a
  "switch" is choosing another session.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..backends.ort import pick_providers, session_options
from ..errors import BackendError, require
from ..bundle.onnx_weights import read_initializers, strip_initializer_inputs


def base_buffer(bundle) -> np.ndarray:
    """The base network's packed refit buffer, read from base.onnx."""
    arrays = read_initializers(bundle.base_onnx(), [t.name for t in bundle.layout.tensors])
    return bundle.layout.pack(arrays)


class PlainSessions:
    """One plain ONNX Runtime session per network; ``targets`` lists BASE (-1) and subclass indices."""

    def __init__(self, bundle, targets: List[int], providers: Optional[List[str]] = None, threads: int = 0):
        ort = require("onnxruntime", "cpu")
        self.bundle = bundle
        self.input_name = None
        model = strip_initializer_inputs(bundle.base_onnx())
        base = base_buffer(bundle)
        providers = pick_providers(ort, providers)
        self.sessions = {}
        self._keep = []  # buffers the sessions read (add_initializer does not copy them)
        for k in targets:
            so = session_options(ort, threads)
            if k >= 0:
                buf = bundle.layout.apply_delta(base, bundle.read_delta(k))
                self._keep.append(buf)
                for name, view in bundle.layout.views(buf).items():
                    value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(view))
                    self._keep.append(value)
                    so.add_initializer(name, value)
            try:
                self.sessions[k] = ort.InferenceSession(model, sess_options=so, providers=providers)
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                raise BackendError("onnxruntime cannot load network {}: {}".format(k, exc)) from None
            self.input_name = self.sessions[k].get_inputs()[0].name

    def infer(self, target: int, batch: np.ndarray) -> np.ndarray:
        return self.sessions[target].run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def weight_bytes(self) -> int:
        """Refit-tensor bytes held by these sessions: one packed network each."""
        return len(self.sessions) * int(self.bundle.layout.total_nbytes)

    def close(self) -> None:
        self.sessions.clear()
        self._keep = []
