"""One TensorRT engine that only runs, after Polygraphy's ``TrtRunner``: it takes a deserialized engine or a callable
that makes one (:func:`engine_maker`), allocates the context and device I/O buffers in ``activate``, frees them in
``deactivate`` (or ``with runner:``), and ``infer`` takes and returns arrays by tensor name."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import BackendError
from ..bundle.learned_routing import FEATURES
from .loader import trt_logger


def engine_maker(trt, plan: bytes):
    """A callable that deserializes *plan* into a fresh engine each time it is called."""

    def make():
        engine = trt.Runtime(trt_logger(trt)).deserialize_cuda_engine(plan)
        if engine is None:
            raise BackendError("cannot deserialize the TensorRT engine (built by another TensorRT version or GPU?)")
        return engine

    return make


class EngineRunner:
    """One engine + (while active) its context and I/O buffers.

    Tensor-name API (``set_tensor_address`` / ``execute_async_v3``) on TensorRT >= 8.5; the
    binding-index API (``execute_async_v2``) on TensorRT 8.2, which JetPack 4.6 ships for
    Jetson Nano and TX2.  An engine built from a model with a ``features`` output gets a buffer
    for it too (TensorRT needs every I/O tensor bound); it is copied back only when asked for.
    An engine given as a callable is made in ``activate`` and dropped in ``deactivate``.
    """

    def __init__(
        self, engine_or_maker, trt, cuda, stream, input_name, output_name, input_shape, head, max_batch, static=False
    ):
        self.trt, self.cuda, self.static = trt, cuda, bool(static)  # static: the engine runs batch max_batch only
        self.maker: Any = engine_or_maker if callable(engine_or_maker) else None
        self.engine: Any = None if callable(engine_or_maker) else engine_or_maker
        self.stream = stream
        self.input_name, self.output_name = input_name, output_name
        self.input_shape, self.head, self.max_batch = tuple(input_shape), head, max_batch
        self.context: Any = None
        self.buffers: Dict[str, Any] = {}
        self.widths: Dict[str, int] = {}

    # -- lifetime -------------------------------------------------------------------------------
    def activate(self) -> "EngineRunner":
        """Make the engine (if given a maker) and its context; allocate and bind the device buffers."""
        if self.context is not None:
            return self
        if self.engine is None:
            self.engine = self.maker()
        self.context = self.engine.create_execution_context()
        self.named_io = hasattr(self.context, "set_tensor_address")
        self.feature_width = self._feature_width()
        self.widths = {self.input_name: int(np.prod(self.input_shape)), self.output_name: self.head}
        if self.feature_width:
            self.widths[FEATURES] = self.feature_width
        try:
            for name, width in self.widths.items():
                self.buffers[name] = self.cuda.mem_alloc(width * self.max_batch * 4)
            self._bind()
        except Exception:
            self.deactivate()
            raise
        return self

    def _bind(self) -> None:
        if self.named_io:
            for name, buf in self.buffers.items():
                self.context.set_tensor_address(name, int(buf))
            return
        self.input_index = self.engine.get_binding_index(self.input_name)
        index = {name: self.engine.get_binding_index(name) for name in self.buffers}
        if min(index.values()) < 0 or self.engine.num_bindings != len(self.buffers):
            raise BackendError("the engine's bindings are not {!r} -> {!r}".format(self.input_name, self.output_name))
        self.bindings = [0] * len(self.buffers)
        for name, buf in self.buffers.items():
            self.bindings[index[name]] = int(buf)

    def deactivate(self) -> None:
        """Free the device buffers and drop the context (and the engine, where this runner made it)."""
        buffers, self.buffers = self.buffers, {}
        for buf in buffers.values():
            buf.free()
        self.context = None
        if self.maker is not None:
            self.engine = None

    def __enter__(self) -> "EngineRunner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- the engine -----------------------------------------------------------------------------
    def _feature_width(self) -> int:
        """Width of the engine's ``features`` output (0: it has none)."""
        if self.named_io:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            dims = self.engine.get_tensor_shape(FEATURES) if FEATURES in names else None
        else:
            i = self.engine.get_binding_index(FEATURES)
            dims = self.engine.get_binding_shape(i) if i >= 0 else None
        return 0 if dims is None else int(dims[len(dims) - 1])  # (N, width): N is -1 in a dynamic profile

    def layer_names(self) -> Optional[List[str]]:
        """The engine's layers as its inspector lists them (names only: edgetool builds with the default profiling
        verbosity, so which device runs each is not in them); None where TensorRT has no inspector."""
        if not hasattr(self.engine, "create_engine_inspector"):
            return None
        trt = self.trt
        inspector = self.engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        return [x if isinstance(x, str) else str(x.get("Name", "")) for x in info.get("Layers", [])]

    def device_memory(self) -> int:
        """Bytes of device memory the engine's context needs (``device_memory_size_v2`` from TensorRT 10 on;
        11 no longer has ``device_memory_size``)."""
        if hasattr(self.engine, "device_memory_size_v2"):
            return int(self.engine.device_memory_size_v2)
        return int(self.engine.device_memory_size)

    # -- inference ------------------------------------------------------------------------------
    def run(self, batch: np.ndarray, features: bool = False):
        """Logits; with *features*, (logits, the ``features`` output): :meth:`infer` for the backend."""
        want = [self.output_name] + ([FEATURES] if features else [])
        out = self.infer({self.input_name: batch}, want)
        return (out[self.output_name], out[FEATURES]) if features else out[self.output_name]

    def infer(self, feed: Dict[str, np.ndarray], outputs: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
        """{output name: array} for {input name: array} (*outputs*: the ones copied back; default every output).
        An engine of one batch size (DLA) runs every *max_batch* rows at a time, the last run padded with zeros
        (:func:`in_static_batches`)."""
        if self.context is None:
            raise BackendError("the engine runner is not active (activate() it, or use it in a with block)")
        if set(feed) != {self.input_name}:
            raise BackendError("the engine takes {!r}, got {}".format(self.input_name, sorted(feed)))
        names = [n for n in self.widths if n != self.input_name] if outputs is None else list(outputs)
        missing = [n for n in names if n not in self.widths or n == self.input_name]
        if missing:
            raise BackendError("the engine has no {} output (its model was exported without one)".format(missing))
        batch = feed[self.input_name]
        if not self.static:
            return self._infer(batch, names)
        return in_static_batches(lambda part: self._infer(part, names), batch, self.max_batch)

    def _infer(self, batch: np.ndarray, names: List[str]) -> Dict[str, np.ndarray]:
        n = batch.shape[0]
        if n > self.max_batch:
            raise BackendError("batch {} exceeds the engine's max batch {}".format(n, self.max_batch))
        shape = (n,) + self.input_shape
        self.cuda.memcpy_htod_async(self.buffers[self.input_name], np.ascontiguousarray(batch), self.stream)
        if self.named_io:
            self.context.set_input_shape(self.input_name, shape)
            ok = self.context.execute_async_v3(self.stream.handle)
        else:
            self.context.set_binding_shape(self.input_index, shape)
            ok = self.context.execute_async_v2(self.bindings, self.stream.handle)
        if not ok:
            raise BackendError("TensorRT execution failed")
        out = {name: np.empty((n, self.widths[name]), dtype=np.float32) for name in names}
        for name, arr in out.items():
            self.cuda.memcpy_dtoh_async(arr, self.buffers[name], self.stream)
        self.stream.synchronize()
        return out


def in_static_batches(run, batch: np.ndarray, size: int) -> Dict[str, np.ndarray]:
    """*run* (one engine call on exactly *size* rows, returning {name: array}) over *batch*: *size* rows at a
    time, the last run zero-padded, the padding rows' outputs dropped."""
    parts: Dict[str, List[np.ndarray]] = {}
    for start in range(0, max(len(batch), 1), size):  # an empty batch: one padded run, no row kept
        part = batch[start : start + size]
        n = len(part)
        if n < size:
            part = np.concatenate([part, np.zeros((size - n,) + part.shape[1:], dtype=part.dtype)])
        for name, got in run(np.ascontiguousarray(part)).items():
            parts.setdefault(name, []).append(got[:n])
    return {name: np.concatenate(arrs) for name, arrs in parts.items()}
