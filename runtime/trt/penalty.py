"""The refit penalty: how much slower the refittable engine runs than a non-refittable one of the same model.

Refittable weights can keep TensorRT from some optimizations (constant folding of weights, some
fusions), and ``REFIT_INDIVIDUAL`` limits that to the tensors marked.  ``edgetool doctor`` builds a
non-refittable engine with everything else the same (model, precision, weight form, batch profile,
GPU or DLA core) and times both on the same batch: the ratio refittable / non-refittable is the
penalty, whose target is :data:`TARGET`.  The timing and the verdict are plain functions here, tested
on the CPU; the numbers come from a device.
"""

from __future__ import annotations

import time
from typing import Callable, Dict

import numpy as np

from .loader import build_engine
from .runner import EngineRunner, engine_maker

TARGET = 1.05  # refittable latency / non-refittable latency
ITERATIONS, WARMUP = 50, 5


def median_ms(run: Callable[[], object], iterations: int = ITERATIONS, warmup: int = WARMUP, clock=time.perf_counter):
    """The median wall time of *run* in milliseconds, over *iterations* after *warmup* untimed runs."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iterations):
        t0 = clock()
        run()
        times.append((clock() - t0) * 1e3)
    return float(np.median(times))


def verdict(refittable_ms: float, fixed_ms: float, target: float = TARGET) -> Dict:
    """The penalty of two latencies, and whether it is within *target*."""
    ratio = refittable_ms / max(fixed_ms, 1e-9)
    return {"refittable_ms": refittable_ms, "fixed_ms": fixed_ms, "ratio": ratio, "within": ratio <= target}


def fixed_runner(be) -> EngineRunner:
    """A non-refittable engine of TrtBackend *be*'s model, with its precision, weight form, batch and device."""
    b, entry = be.bundle, be.engine_entry or {}
    plan = build_engine(
        b.base_onnx(),
        b.input["name"],
        b.input["shape"],
        be.precision,
        workspace_mb=be.workspace_mb,
        max_batch=be.max_batch,
        form=be.form,
        dla_core=entry.get("dla_core"),
        refittable=False,
    )
    shape = (b.input["name"], b.output_name, b.input["shape"], b.head_width, be.max_batch)
    return EngineRunner(engine_maker(be.trt, plan), be.trt, be.cuda, be.stream, *shape, static=be.sub.static)


def refit_penalty(be, batch: np.ndarray, make_fixed=fixed_runner, iterations: int = ITERATIONS) -> Dict:
    """Time *be*'s refittable engine and a non-refittable one on *batch*; their :func:`verdict`."""
    with make_fixed(be) as fixed:  # its context and buffers are freed after the timing
        refittable_ms = median_ms(lambda: be.sub.run(batch), iterations)
        fixed_ms = median_ms(lambda: fixed.run(batch), iterations)
    return dict(verdict(refittable_ms, fixed_ms), batch=len(batch), iterations=iterations)
