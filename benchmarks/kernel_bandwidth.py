#!/usr/bin/env python
"""Bandwidth of the CUDA delta kernel (runtime/kernels/delta_add.cu), checked bit-exact first.

Needs pycuda and an NVIDIA GPU.  Writes benchmarks/results/kernel_bandwidth.json with the
GPU named.  Each row is measured side by side in one run:

* kernel: one launch over a packed buffer; GB/s counts three streams (read base, read delta,
  write weights);
* memcpy: a device-to-device copy of the same buffer (two streams), the practical ceiling;
  ``of_memcpy`` = kernel GB/s / memcpy GB/s;
* numpy: the same delta applied on the host (what the ONNX Runtime backend does);
  ``speedup_vs_numpy`` = numpy ms / kernel ms.

Usage: python benchmarks/kernel_bandwidth.py [--sizes-mib 1 4 16 64 256]
"""

import argparse
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
from common import write_result  # noqa: E402


def memcpy_ms(cuda, nbytes, repeats):
    src, dst = cuda.mem_alloc(nbytes), cuda.mem_alloc(nbytes)
    try:
        cuda.memcpy_dtod(dst, src, nbytes)
        start, end = cuda.Event(), cuda.Event()
        start.record()
        for _ in range(repeats):
            cuda.memcpy_dtod_async(dst, src, nbytes)
        end.record()
        end.synchronize()
        return start.time_till(end) / repeats
    finally:
        src.free()
        dst.free()


def numpy_ms(nbytes, int8_nbytes, repeats):
    from edgetool.runtime.trt.delta_apply import reference_apply
    from edgetool.runtime.trt.kernel_check import random_case

    base, delta = random_case(nbytes, int8_nbytes)
    reference_apply(base, delta, int8_nbytes)
    times = []
    for _ in range(max(3, repeats // 10)):
        t0 = time.perf_counter()
        reference_apply(base, delta, int8_nbytes)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "kernel_bandwidth.json"))
    args = ap.parse_args()
    from edgetool.runtime.machine import gpu_info

    gpu = gpu_info()
    if not gpu["available"]:
        sys.exit("error: kernel_bandwidth needs pycuda and an NVIDIA GPU ({})".format(gpu["reason"]))
    import pycuda.autoinit  # noqa: F401
    import pycuda.driver as cuda

    from edgetool.runtime.trt.delta_apply import compile_module
    from edgetool.runtime.trt.kernel_check import check_kernel

    mod = compile_module()
    dev = cuda.Context.get_device()
    rows = []
    for mib in args.sizes_mib:
        n = mib << 20
        int8_n = (n * 3 // 4) // 256 * 256
        res = check_kernel(mod, nbytes=n, int8_nbytes=int8_n, repeats=args.repeats)
        copy = memcpy_ms(cuda, n, args.repeats)
        host = numpy_ms(n, int8_n, args.repeats)
        copy_gbps = 2 * n / (copy * 1e-3) / 1e9
        row = {
            "packed_mib": mib,
            "exact": res["exact"],
            "kernel_ms": res["ms"],
            "kernel_gbps": res["gbps"],
            "memcpy_ms": copy,
            "memcpy_gbps": copy_gbps,
            "of_memcpy": res["gbps"] / copy_gbps,
            "numpy_ms": host,
            "speedup_vs_numpy": host / res["ms"],
        }
        rows.append(row)
        print(
            "{:>5} MiB  exact={}  kernel {:.3f} ms {:.0f} GB/s ({:.0%} of memcpy {:.0f} GB/s)  numpy {:.2f} ms "
            "({:.0f}x)".format(
                mib, res["exact"], res["ms"], res["gbps"], row["of_memcpy"], copy_gbps, host, row["speedup_vs_numpy"]
            )
        )
    if not all(r["exact"] for r in rows):
        sys.exit("error: the kernel is not bit-exact against numpy on this GPU; nothing written")
    result = {
        "benchmark": "kernel_bandwidth",
        "gpu": dev.name(),
        "compute_capability": "{}.{}".format(*dev.compute_capability()),
        "cuda_driver": cuda.get_driver_version(),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "rows": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
