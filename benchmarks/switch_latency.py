#!/usr/bin/env python
"""Subclass switch latency: edgetool's in-place delta switch vs cold-loading the full model.

Measured side by side in one process, on one bundle:

* ``switch``    - edgetool: read + verify + decode the delta, add it to the base weights in
                  place (ONNX Runtime backend, weights bound once through IOBinding);
* ``cold_load`` - the baseline: create a new ONNX Runtime session from the full int8
                  subclass model file (what you would do without deltas), plus its first
                  inference;
* per codec (7z, zstd, raw): stored bytes and decode time (the default codec's evidence);
* inference cost of refittable weights bound as inputs vs plain initializers.

Usage:  python benchmarks/switch_latency.py [--bundle DIR] [--repeats 30]
Without --bundle it trains the demo's networks (resumable) into edgetool-out/.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
from common import write_result  # noqa: E402


def machine() -> str:
    from edgetool.runtime.machine import machine_name

    return machine_name()


def ensure_bundle(path):
    if path and os.path.isfile(os.path.join(path, "manifest.json")):
        return path
    from edgetool.toolchain.train.run import Run, TrainConfig

    out = "edgetool-out"
    run = Run.open(os.path.join(out, "run"), TrainConfig(), progress=False)
    run.train_all()
    bundle = os.path.join(out, "bundle")
    run.export(bundle, "zstd")
    return bundle


def standalone_models(bundle_dir, tmp):
    """Full int8 subclass models (base.onnx with delta_i applied, plain initializers) on disk."""
    import onnx
    from onnx import numpy_helper

    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.bundle.onnx_weights import read_initializers, strip_initializer_inputs

    b = Bundle.open(bundle_dir)
    plain = strip_initializer_inputs(b.base_onnx())
    base_arrays = read_initializers(b.base_onnx(), [t.name for t in b.layout.tensors])
    base_buf = b.layout.pack(base_arrays)
    paths = []
    for k in range(b.num_superclasses):
        views = b.layout.views(b.layout.apply_delta(base_buf, b.read_delta(k)))
        m = onnx.load_from_string(plain)
        for init in m.graph.initializer:
            if init.name in views:
                init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(views[init.name]), init.name))
        p = os.path.join(tmp, "sub{}.onnx".format(k))
        onnx.save(m, p)
        paths.append(p)
    base_plain = os.path.join(tmp, "base_plain.onnx")
    with open(base_plain, "wb") as f:
        f.write(plain)
    return paths, base_plain


def stats(ms):
    from edgetool.runtime.backends.base import summarize

    return summarize(ms)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "switch_latency.json"))
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from edgetool.runtime.bundle import codecs
    from edgetool.runtime.backends.base import BASE
    from edgetool.runtime.backends.ort import OrtBackend
    from edgetool.runtime.bundle.reader import Bundle

    bundle_dir = ensure_bundle(args.bundle)
    b = Bundle.open(bundle_dir)
    x1 = b.samples()[:1]
    N = b.num_superclasses
    tmp = tempfile.mkdtemp(prefix="edgetool-bench-")
    try:
        sub_paths, base_plain = standalone_models(bundle_dir, tmp)

        # -- ours: in-place switch -------------------------------------------------------
        with OrtBackend(b, threads=args.threads) as be:
            be.infer(x1)
            be.timings.clear()
            for r in range(args.repeats):
                for k in range(N):
                    be.switch(k)
                    be.switch(BASE)
            sw = be.timings.samples
            to_sub = [sw["switch"][i] for i in range(0, len(sw["switch"]), 2)]
            to_base = [sw["switch"][i] for i in range(1, len(sw["switch"]), 2)]
            decode = [sw["decode"][i] for i in range(0, len(sw["decode"]), 2)]
            apply_ms = [sw["apply"][i] for i in range(0, len(sw["apply"]), 2)]
            # inference with weights bound as inputs
            infer_inputs = {}
            for bs in (1, 32):
                xb = np.repeat(b.samples(), (bs + len(b.samples()) - 1) // len(b.samples()), axis=0)[:bs]
                for _ in range(3):
                    be.infer(xb)
                be.timings.clear()
                for _ in range(args.repeats * 3):
                    be.infer(xb)
                infer_inputs[bs] = stats(be.timings.samples["infer"])

        # -- baseline: cold-load the full subclass model into a new session ---------------
        cold, cold_create = [], []
        for r in range(args.repeats):
            for k in range(N):
                t0 = time.perf_counter()
                s = ort.InferenceSession(
                    sub_paths[k], providers=["CPUExecutionProvider"], sess_options=_so(ort, args.threads)
                )
                t1 = time.perf_counter()
                s.run(None, {"input": x1})
                t2 = time.perf_counter()
                cold.append((t2 - t0) * 1e3)
                cold_create.append((t1 - t0) * 1e3)
                del s

        # -- inference with plain initializers --------------------------------------------
        s = ort.InferenceSession(base_plain, providers=["CPUExecutionProvider"], sess_options=_so(ort, args.threads))
        infer_plain = {}
        for bs in (1, 32):
            xb = np.repeat(b.samples(), (bs + len(b.samples()) - 1) // len(b.samples()), axis=0)[:bs]
            for _ in range(3):
                s.run(None, {"input": xb})
            ts = []
            for _ in range(args.repeats * 3):
                t0 = time.perf_counter()
                s.run(None, {"input": xb})
                ts.append((time.perf_counter() - t0) * 1e3)
            infer_plain[bs] = stats(ts)

        # -- codecs: storage vs decode time (decode time is switch latency) ----------------
        raws = [b.read_delta(k).tobytes() for k in range(N)]
        codec_rows = {}
        for name in ("7z", "zstd", "raw"):
            enc = [codecs.encode(name, r) for r in raws]
            ts = []
            for _ in range(args.repeats):
                for e in enc:
                    t0 = time.perf_counter()
                    codecs.decode(name, e, len(raws[0]))
                    ts.append((time.perf_counter() - t0) * 1e3)
            codec_rows[name] = {
                "stored_bytes_per_delta": statistics.mean(len(e) for e in enc),
                "raw_bytes": len(raws[0]),
                "decode_ms": stats(ts),
                "x_per_subclass": statistics.mean(len(e) for e in enc) / b.manifest["base"]["size"],
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "benchmark": "switch_latency",
        "machine": machine(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "bundle": {
            "path": bundle_dir,
            "superclasses": N,
            "base_onnx_bytes": b.manifest["base"]["size"],
            "codec": b.deltas[0]["codec"],
            "refit_bytes": b.layout.total_nbytes,
        },
        "repeats": args.repeats,
        "switch_to_subclass_ms": stats(to_sub),
        "switch_decode_ms": stats(decode),
        "switch_apply_ms": stats(apply_ms),
        "switch_to_base_ms": stats(to_base),
        "cold_load_ms": stats(cold),
        "cold_load_session_create_ms": stats(cold_create),
        "ratio_cold_over_switch_median": statistics.median(cold) / statistics.median(to_sub),
        "infer_ms_weights_as_inputs": {str(k): v for k, v in infer_inputs.items()},
        "infer_ms_plain_initializers": {str(k): v for k, v in infer_plain.items()},
        "infer_overhead_weights_as_inputs_median": {
            str(k): infer_inputs[k]["median"] / infer_plain[k]["median"] for k in infer_inputs
        },
        "codecs": codec_rows,
    }
    write_result(args.out, result)
    print(
        "switch (decode+apply) median {:.3f} ms | cold load median {:.3f} ms | ratio {:.1f}x".format(
            result["switch_to_subclass_ms"]["median"],
            result["cold_load_ms"]["median"],
            result["ratio_cold_over_switch_median"],
        )
    )
    for name, row in codec_rows.items():
        print(
            "codec {:<5} {:>8.0f} B/delta (x={:.3f})  decode median {:.3f} ms".format(
                name, row["stored_bytes_per_delta"], row["x_per_subclass"], row["decode_ms"]["median"]
            )
        )
    print(
        "infer overhead of weights-as-inputs (median ratio): "
        + ", ".join(
            "batch {}: {:.2f}x".format(k, v) for k, v in result["infer_overhead_weights_as_inputs_median"].items()
        )
    )
    return result


def _so(ort, threads):
    from edgetool.runtime.backends.ort import session_options

    return session_options(ort, threads)


if __name__ == "__main__":
    main()
