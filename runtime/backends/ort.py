"""ONNX Runtime backend: the CPU fallback, and CUDA/TensorRT execution providers where present.

The refit analogue: ``base.onnx`` lists every refittable initializer among its graph
inputs too ("overridable initializers").  One session is built once, on the model with
those initializers removed (they stay graph inputs, so the session holds no copy of its
own); each refittable tensor is bound once through IOBinding to a view of one packed host
buffer.  A switch writes ``base + delta`` into that buffer in place
(:class:`~edgetool.runtime.bundle.packed.PackedWeights`: a sparse delta is scatter-added, only
its changed codes written), so no session is ever rebuilt.
"""

from __future__ import annotations

import logging
from typing import List, Optional

import numpy as np

from ..errors import BackendError, BundleError, require
from ..bundle.learned_routing import FEATURES
from ..bundle.onnx_graph import trunk_or_given
from ..bundle.onnx_weights import drop_initializers, read_initializers
from ..bundle.packed import PackedWeights
from .base import Backend

log = logging.getLogger(__name__)

GIVEN, RUN_TRUNK = "edgetool_trunk_given", "edgetool_run_trunk"  # the inputs of the second pass


def session_options(ort, threads: int = 0, mem_pattern: bool = True):
    so = ort.SessionOptions()
    so.log_severity_level = 3  # overridable initializers trigger a warning per tensor otherwise
    # With the weights bound as inputs, the memory pattern planned after the first run is a
    # second block beside the first run's allocations, and the arena keeps both (+34 MB of
    # dequantized weights on a ResNet-18); the switching backend turns it off.
    so.enable_mem_pattern = mem_pattern
    if threads:
        so.intra_op_num_threads = threads
    return so


def pick_providers(ort, requested: Optional[List[str]] = None) -> List[str]:
    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendError(
                "onnxruntime providers not available: {} (available: {})".format(
                    ", ".join(missing), ", ".join(available)
                )
            )
        return list(requested)
    order = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in order if p in available] or available


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle, providers: Optional[List[str]] = None, threads: int = 0):
        super().__init__(bundle)
        ort = require("onnxruntime", "cpu")
        self.ort = ort
        model = bundle.base_onnx()
        try:
            base = read_initializers(model, [t.name for t in self.layout.tensors])
            self.base = self.layout.pack(base)
        except (ValueError, KeyError) as exc:
            raise BundleError(
                bundle._display(bundle.manifest["base"]["file"]),
                "refit tensors do not match the manifest ({})".format(exc),
            ) from None
        self.providers = pick_providers(ort, providers)
        names = [t.name for t in self.layout.tensors]
        # A flat bundle with specialists and a recorded trunk: the trunk runs once per image, a
        # specialist reruns only the tail.  One session serves both passes (the trunk inside an
        # ``If``), so the network has one graph, one set of kernels and one arena.
        self.trunk = bundle.model.trunk_output if bundle.specialists else None
        graph = drop_initializers(self._graph(model), names)
        try:
            self.session = ort.InferenceSession(
                graph,
                sess_options=session_options(ort, threads, mem_pattern=False),
                providers=self.providers,
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BackendError(
                "onnxruntime cannot load {}: {}".format(bundle._display(bundle.manifest["base"]["file"]), exc)
            ) from None
        inputs = [i.name for i in self.session.get_inputs()]
        missing = [t.name for t in self.layout.tensors if t.name not in inputs]
        if missing:
            raise BundleError(
                bundle._display(bundle.manifest["base"]["file"]),
                "refit tensors are not graph inputs: {}".format(", ".join(missing[:5])),
            )
        self.input_name = (
            bundle.input.get("name")
            or [n for n in inputs if n not in self.layout.by_name and n not in (GIVEN, RUN_TRUNK)][0]
        )
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._bind()
        log.info(
            "onnxruntime %s on %s: %d refittable tensors bound once (%s)",
            ort.__version__,
            ", ".join(self.providers),
            len(self.views),
            "shared host buffer" if self.shared else "copied",
        )

    def _graph(self, model: bytes) -> bytes:
        if not self.trunk:
            return model
        try:
            return trunk_or_given(model, self.trunk, GIVEN, RUN_TRUNK)
        except ValueError as exc:
            raise BundleError(
                self.bundle._display(self.bundle.manifest["base"]["file"]),
                "cannot run the tail after {!r} on its own: {}".format(self.trunk, exc),
            ) from None

    def _bind(self) -> None:
        """Bind every refittable tensor once to a view of one packed buffer."""
        self.packed = PackedWeights(self.layout, self.base)
        self.weights = self.packed.buf  # the packed buffer the session reads
        self.views = self.layout.views(self.weights)
        self.binding = self.session.io_binding()
        self.ortvalues = {}
        self.shared = True
        for name, view in self.views.items():
            ov = self.ort.OrtValue.ortvalue_from_numpy(view)
            if ov.data_ptr() != view.ctypes.data:
                self.shared = False
            self.ortvalues[name] = ov
            self.binding.bind_ortvalue_input(name, ov)
        self.binding.bind_output(self.bundle.output_name)
        # the unused input of each pass is empty: no image on the second, no trunk output on the first
        self._no_image = np.zeros([0] + list(self.bundle.input["shape"]), np.float32)
        self._no_trunk = np.zeros((0,), np.float32)
        self._flags = {True: np.array(True), False: np.array(False)}

    @property
    def trunk_once(self) -> bool:
        return self.trunk is not None

    def infer_trunk(self, batch):
        """(logits, trunk output) of the network now loaded."""
        return self._timed(lambda b: tuple(self._run(b, [self.bundle.output_name, self.trunk])), batch)

    def infer_tail(self, trunk):
        """Logits of the tail of the network now loaded, from trunk outputs (:meth:`infer_trunk`)."""

        def run(t):
            given = np.ascontiguousarray(t, dtype=np.float32)
            return self._bound_run(self._no_image, given, False, [self.bundle.output_name])[0]

        return self._timed(run, trunk)

    def _apply(self, delta):
        self.packed.set(delta)
        if not self.shared:  # device-resident OrtValues: copy into them
            for name, ov in self.ortvalues.items():
                ov.update_inplace(self.views[name])

    def _weights_unknown(self):
        self.packed.invalidate()

    def _infer(self, batch):
        return self._run(batch, [self.bundle.output_name])[0]

    def _infer_features(self, batch):
        if FEATURES not in self.outputs:
            raise BundleError(
                self.bundle._display(self.bundle.manifest["base"]["file"]),
                "the model has no {!r} output (exported before edgetool gave one)".format(FEATURES),
            )
        logits, feats = self._run(batch, [self.bundle.output_name, FEATURES])
        return logits, feats

    def _run(self, batch, outputs):
        shape = self.bundle.input["shape"]
        if batch.ndim != 4 or list(batch.shape[1:]) != list(shape):
            raise BackendError(
                "input batch has shape {}, the bundle expects (N, {})".format(
                    tuple(batch.shape), ", ".join(str(d) for d in shape)
                )
            )
        return self._bound_run(batch, self._no_trunk, True, outputs)

    def _bound_run(self, image, given, run_trunk: bool, outputs):
        """One run of the session: the image (the first pass) or the trunk's output (*given*, the
        second pass, where the graph has one), the weights bound once."""
        b = self.binding
        b.bind_cpu_input(self.input_name, image)
        if self.trunk:
            b.bind_cpu_input(GIVEN, given)
            b.bind_cpu_input(RUN_TRUNK, self._flags[run_trunk])
        b.clear_binding_outputs()
        for name in outputs:  # fresh outputs: the batch size varies
            b.bind_output(name)
        self.session.run_with_iobinding(b)
        return b.copy_outputs_to_cpu()

    def memory(self):
        out = {"packed_weights_bytes": int(self.weights.nbytes), "base_copy_bytes": int(self.base.nbytes)}
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out["process_rss_bytes"] = int(line.split()[1]) * 1024
        except OSError:
            pass
        return out


def plain_session(model_bytes: bytes, providers=None, threads: int = 0):
    """A standalone session on a model whose weights are plain initializers (the cold-load baseline)."""
    ort = require("onnxruntime", "cpu")
    return ort.InferenceSession(
        model_bytes, sess_options=session_options(ort, threads), providers=pick_providers(ort, providers)
    )
