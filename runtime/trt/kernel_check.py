"""Bit-exactness and bandwidth of the CUDA delta kernel against numpy (needs a GPU)."""

from __future__ import annotations


import numpy as np

from .delta_apply import THREADS, launch_geometry, reference_apply


def random_case(nbytes: int, int8_nbytes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, nbytes, dtype=np.uint8)
    delta = rng.integers(0, 256, nbytes, dtype=np.uint8)
    # wrap-around corners: 127 + 1, -128 - 1, -127 + 255 (= -128), 0 + 128
    base[:4] = [127, 128, 129, 0]
    delta[:4] = [1, 255, 255, 128]
    f = slice(int8_nbytes, nbytes)
    base[f] = rng.normal(size=(nbytes - int8_nbytes) // 4).astype(np.float32).view(np.uint8)
    delta[f] = (rng.normal(size=(nbytes - int8_nbytes) // 4) * 1e-2).astype(np.float32).view(np.uint8)
    return base, delta


def check_kernel(module, nbytes: int = 1 << 22, int8_nbytes: int = 3 << 20, repeats: int = 50) -> dict:
    import pycuda.driver as cuda

    fn = module.get_function("edgetool_delta_apply")
    base, delta = random_case(nbytes, int8_nbytes)
    expect = reference_apply(base, delta, int8_nbytes)
    d_base, d_delta, d_out = cuda.mem_alloc(nbytes), cuda.mem_alloc(nbytes), cuda.mem_alloc(nbytes)
    try:
        cuda.memcpy_htod(d_base, base)
        cuda.memcpy_htod(d_delta, delta)
        n_vec, blocks = launch_geometry(nbytes)
        args = (d_base, d_delta, d_out, np.uint32(int8_nbytes // 16), np.uint32(n_vec))
        fn(*args, block=(THREADS, 1, 1), grid=(blocks, 1))
        cuda.Context.synchronize()
        got = np.empty_like(base)
        cuda.memcpy_dtoh(got, d_out)
        exact = bool(np.array_equal(got, expect))
        start, end = cuda.Event(), cuda.Event()
        start.record()
        for _ in range(repeats):
            fn(*args, block=(THREADS, 1, 1), grid=(blocks, 1))
        end.record()
        end.synchronize()
        ms = start.time_till(end) / repeats
    finally:
        for b in (d_base, d_delta, d_out):
            b.free()
    # 3 streams of nbytes: read base, read delta, write out
    return {"exact": exact, "nbytes": nbytes, "ms": ms, "gbps": 3 * nbytes / (ms * 1e-3) / 1e9}
