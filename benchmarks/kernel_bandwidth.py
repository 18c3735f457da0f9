#!/usr/bin/env python
"""Bandwidth of the CUDA delta kernel (runtime/kernels/delta_add.cu), checked bit-exact first.

Needs pycuda and an NVIDIA GPU.  Writes benchmarks/results/kernel_bandwidth.json with the
GPU named.  GB/s counts three streams per byte of packed buffer: read base, read delta,
write weights.

Usage: python benchmarks/kernel_bandwidth.py [--sizes-mib 1 4 16 64 256]
"""
import argparse
import os
import sys
import platform

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import write_result  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "kernel_bandwidth.json"))
    args = ap.parse_args()
    import pycuda.autoinit  # noqa: F401
    import pycuda.driver as cuda

    from edgetool.runtime.cuda_delta import compile_module
    from edgetool.runtime.kernel_check import check_kernel

    mod = compile_module()
    dev = cuda.Context.get_device()
    rows = []
    for mib in args.sizes_mib:
        n = mib << 20
        res = check_kernel(mod, nbytes=n, int8_nbytes=(n * 3 // 4) // 256 * 256, repeats=args.repeats)
        rows.append({"packed_mib": mib, "exact": res["exact"], "ms": res["ms"], "gbps": res["gbps"]})
        print("{:>5} MiB  exact={}  {:.3f} ms  {:.1f} GB/s".format(mib, res["exact"], res["ms"], res["gbps"]))
    result = {"benchmark": "kernel_bandwidth", "gpu": dev.name(),
              "compute_capability": "{}.{}".format(*dev.compute_capability()),
              "cuda_driver": cuda.get_driver_version(), "host": platform.node(), "rows": rows}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
