"""The CUDA delta kernel (``kernels/delta_add.cu``) launched through pycuda.

:class:`DeviceDeltaApplier` owns three device buffers in the packed layout:

* ``base``    - the base network's packed refit tensors (uploaded once);
* ``delta``   - staging for one decoded delta (host-to-device copy from pinned memory);
* ``weights`` - what the engine reads: every tensor's pointer (``weights + offset``) is
  what the TensorRT refitter is given; the buffer never moves.

A switch is one async H2D copy and one kernel launch on the inference stream; switching
back to the base network is a device-to-device copy.  Nothing is written to ``weights``
before the delta is fully decoded and verified on the host.  A sparse delta
(:class:`~edgetool.runtime.bundle.sparse_codec.SparseDelta`) is scattered straight into the pinned
staging buffer (:func:`stage_delta`), with no dense copy of it made on the way.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ..errors import DeviceError, require
from ..bundle.sparse_codec import SparseDelta

KERNEL_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels", "delta_add.cu")
THREADS = 256
VEC = 16  # bytes per thread per iteration (uint4)


def kernel_source() -> str:
    with open(KERNEL_PATH) as f:
        return f.read()


def launch_geometry(total_nbytes: int, max_blocks: int = 1024):
    """(n_int8_vec, n_total_vec, grid) for a packed buffer of *total_nbytes*."""
    if total_nbytes % VEC:
        raise ValueError("packed buffers are multiples of {} bytes".format(VEC))
    n_vec = total_nbytes // VEC
    blocks = max(1, min(max_blocks, (n_vec + THREADS - 1) // THREADS))
    return n_vec, blocks


def reference_apply(base: np.ndarray, delta: np.ndarray, int8_nbytes: int) -> np.ndarray:
    """What the kernel computes, in numpy (the bit-exact oracle of the GPU tests)."""
    out = np.empty_like(base)
    np.add(base[:int8_nbytes], delta[:int8_nbytes], out=out[:int8_nbytes])
    f = slice(int8_nbytes, base.size)
    np.add(base[f].view(np.float32), delta[f].view(np.float32), out=out[f].view(np.float32))
    return out


def stage_delta(staging: np.ndarray, delta) -> None:
    """Write *delta* (dense uint8, or a SparseDelta) into the host staging buffer the H2D copy reads.

    The kernel adds the whole packed buffer, so the staging buffer must hold the complete
    delta: a sparse one is zero-filled and scattered in place."""
    if isinstance(delta, SparseDelta):
        delta.dense(out=staging)
        return
    if delta.dtype != np.uint8 or delta.shape != staging.shape:
        raise ValueError("delta must be uint8{}, got {}{}".format(staging.shape, delta.dtype, delta.shape))
    staging[...] = delta


class DeviceDeltaApplier:
    def __init__(self, layout, base_packed: np.ndarray, stream=None, module=None):
        cuda = require("pycuda.driver")
        self.cuda = cuda
        self.layout = layout
        self.stream = stream
        self.module = module or compile_module()
        self.fn = self.module.get_function("edgetool_delta_apply")
        n = layout.total_nbytes
        if base_packed.size != n:
            raise ValueError("base buffer size {} != layout {}".format(base_packed.size, n))
        self.base = cuda.mem_alloc(n)
        self.delta = cuda.mem_alloc(n)
        self.weights = cuda.mem_alloc(n)
        self.host_delta = cuda.pagelocked_empty(n, dtype=np.uint8)
        cuda.memcpy_htod(self.base, np.ascontiguousarray(base_packed))
        cuda.memcpy_dtod(self.weights, self.base, n)
        self.n_int8_vec = layout.int8_nbytes // VEC
        self.n_vec, self.blocks = launch_geometry(n)

    def pointer(self, name: str) -> int:
        """Device address of tensor *name* inside the registered weights buffer."""
        return int(self.weights) + self.layout.by_name[name].offset

    def apply(self, delta: Optional[np.ndarray]) -> None:
        """weights = base (+ delta); asynchronous on ``self.stream``."""
        cuda = self.cuda
        n = self.layout.total_nbytes
        if delta is None:
            cuda.memcpy_dtod_async(self.weights, self.base, n, self.stream)
            return
        stage_delta(self.host_delta, delta)
        cuda.memcpy_htod_async(self.delta, self.host_delta, self.stream)
        self.fn(
            self.base,
            self.delta,
            self.weights,
            np.uint32(self.n_int8_vec),
            np.uint32(self.n_vec),
            block=(THREADS, 1, 1),
            grid=(self.blocks, 1),
            stream=self.stream,
        )

    def download(self) -> np.ndarray:
        out = np.empty(self.layout.total_nbytes, dtype=np.uint8)
        if self.stream is not None:
            self.stream.synchronize()
        self.cuda.memcpy_dtoh(out, self.weights)
        return out

    def free(self) -> None:
        for buf in (self.base, self.delta, self.weights):
            buf.free()


def compile_module(arch: Optional[str] = None):
    """Compile the kernel with pycuda (nvcc of the device's CUDA toolkit; cached by pycuda)."""
    require("pycuda.driver")
    try:
        from pycuda.compiler import SourceModule
    except ImportError:
        raise DeviceError("pycuda.compiler is unavailable") from None
    try:
        return SourceModule(kernel_source(), no_extern_c=True, arch=arch, options=["-O3"])
    except Exception as exc:  # pycuda raises CompileError with nvcc's log
        raise DeviceError("cannot compile {}: {}".format(KERNEL_PATH, str(exc).splitlines()[0])) from None
