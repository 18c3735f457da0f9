"""One deserialized TensorRT engine that only runs: context, device I/O buffers, ``infer``."""

from __future__ import annotations

import numpy as np

from ..errors import BackendError
from .loader import trt_logger


class EngineRunner:
    """One deserialized engine + context + I/O buffers.

    Tensor-name API (``set_tensor_address`` / ``execute_async_v3``) on TensorRT >= 8.5; the
    binding-index API (``execute_async_v2``) on TensorRT 8.2, which JetPack 4.6 ships for
    Jetson Nano and TX2.
    """

    def __init__(self, trt, cuda, plan: bytes, stream, input_name, output_name, input_shape, head, max_batch):
        self.trt, self.cuda = trt, cuda
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
        if self.named_io:
            self.context.set_tensor_address(input_name, int(self.d_in))
            self.context.set_tensor_address(output_name, int(self.d_out))
        else:
            self.input_index = self.engine.get_binding_index(input_name)
            output_index = self.engine.get_binding_index(output_name)
            if self.input_index < 0 or output_index < 0 or self.engine.num_bindings != 2:
                raise BackendError("the engine's bindings are not {!r} -> {!r}".format(input_name, output_name))
            self.bindings = [0, 0]
            self.bindings[self.input_index] = int(self.d_in)
            self.bindings[output_index] = int(self.d_out)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
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
        self.stream.synchronize()
        return out
