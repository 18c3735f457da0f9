"""One deserialized TensorRT engine that only runs: context, device I/O buffers, ``infer``."""

from __future__ import annotations

import json
from typing import List, Optional

import numpy as np

from ..errors import BackendError
from ..bundle.learned_routing import FEATURES
from .loader import trt_logger


class EngineRunner:
    """One deserialized engine + context + I/O buffers.

    Tensor-name API (``set_tensor_address`` / ``execute_async_v3``) on TensorRT >= 8.5; the
    binding-index API (``execute_async_v2``) on TensorRT 8.2, which JetPack 4.6 ships for
    Jetson Nano and TX2.  An engine built from a model with a ``features`` output gets a buffer
    for it too (TensorRT needs every I/O tensor bound); it is copied back only when asked for.
    """

    def __init__(
        self, trt, cuda, plan: bytes, stream, input_name, output_name, input_shape, head, max_batch, static=False
    ):
        self.trt, self.cuda, self.static = trt, cuda, bool(static)  # static: the engine runs batch max_batch only
        self.runtime = trt.Runtime(trt_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendError("cannot deserialize the TensorRT engine (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = stream
        self.input_name, self.output_name = input_name, output_name
        self.input_shape, self.head, self.max_batch = tuple(input_shape), head, max_batch
        nin = int(np.prod(input_shape)) * max_batch * 4
        self.d_in = cuda.mem_alloc(nin)
        self.d_out = cuda.mem_alloc(head * max_batch * 4)
        self.named_io = hasattr(self.context, "set_tensor_address")
        self.feature_width = self._feature_width()
        self.d_feat = cuda.mem_alloc(self.feature_width * max_batch * 4) if self.feature_width else None
        buffers = {input_name: self.d_in, output_name: self.d_out}
        if self.d_feat is not None:
            buffers[FEATURES] = self.d_feat
        if self.named_io:
            for name, buf in buffers.items():
                self.context.set_tensor_address(name, int(buf))
        else:
            self.input_index = self.engine.get_binding_index(input_name)
            index = {name: self.engine.get_binding_index(name) for name in buffers}
            if min(index.values()) < 0 or self.engine.num_bindings != len(buffers):
                raise BackendError("the engine's bindings are not {!r} -> {!r}".format(input_name, output_name))
            self.bindings = [0] * len(buffers)
            for name, buf in buffers.items():
                self.bindings[index[name]] = int(buf)

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

    def infer(self, batch: np.ndarray, features: bool = False):
        """Logits; with *features*, (logits, the ``features`` output).  An engine of one batch size (DLA) runs
        every *max_batch* rows at a time, the last run padded with zeros (:func:`in_static_batches`)."""
        if self.static:
            return in_static_batches(lambda part: self._infer(part, features), batch, self.max_batch, features)
        return self._infer(batch, features)

    def _infer(self, batch: np.ndarray, features: bool):
        n = batch.shape[0]
        if features and not self.feature_width:
            raise BackendError("the engine has no {!r} output (its model was exported without one)".format(FEATURES))
        if n > self.max_batch:
            raise BackendError("batch {} exceeds the engine's max batch {}".format(n, self.max_batch))
        shape = (n,) + self.input_shape
        out = np.empty((n, self.head), dtype=np.float32)
        self.cuda.memcpy_htod_async(self.d_in, batch, self.stream)
        if self.named_io:
            self.context.set_input_shape(self.input_name, shape)
            ok = self.context.execute_async_v3(self.stream.handle)
        else:
            self.context.set_binding_shape(self.input_index, shape)
            ok = self.context.execute_async_v2(self.bindings, self.stream.handle)
        if not ok:
            raise BackendError("TensorRT execution failed")
        self.cuda.memcpy_dtoh_async(out, self.d_out, self.stream)
        if features:
            feats = np.empty((n, self.feature_width), dtype=np.float32)
            self.cuda.memcpy_dtoh_async(feats, self.d_feat, self.stream)
        self.stream.synchronize()
        return (out, feats) if features else out


def in_static_batches(run, batch: np.ndarray, size: int, features: bool = False):
    """*run* (one engine call on exactly *size* rows) over *batch*: *size* rows at a time, the last run
    zero-padded, the padding rows' outputs dropped."""
    outs: List[np.ndarray] = []
    feats: List[np.ndarray] = []
    for start in range(0, max(len(batch), 1), size):  # an empty batch: one padded run, no row kept
        part = batch[start : start + size]
        n = len(part)
        if n < size:
            part = np.concatenate([part, np.zeros((size - n,) + part.shape[1:], dtype=part.dtype)])
        got = run(np.ascontiguousarray(part))
        if features:
            outs.append(got[0][:n])
            feats.append(got[1][:n])
        else:
            outs.append(got[:n])
    return (np.concatenate(outs), np.concatenate(feats)) if features else np.concatenate(outs)
