"""``edgetool doctor``'s TensorRT checks: the engine against ONNX Runtime, refit timing with the outputs
checked after every refit, the refit penalty (refittable / non-refittable latency) and a DLA engine's line.

Each check is one :class:`~.check_status.Check` line, added through the ``add`` callback of
:func:`.doctor.run`.
"""

from __future__ import annotations

import time
from typing import cast

import numpy as np

from .check_status import FAIL, INFO, PASS, SKIP
from . import commands


def trt_checks(add, bundle, samples, reference, gpu, refits, atol_rel, engine_mode):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from .errors import MissingDependencyError

        add("tensorrt engine", SKIP, str(MissingDependencyError("tensorrt")))
        add("tensorrt vs onnxruntime", SKIP, "needs TensorRT")
        add("refit timing", SKIP, "needs TensorRT")
        add("refit penalty", SKIP, "needs TensorRT")
        return
    if not gpu.get("available"):
        add("tensorrt engine", SKIP, "no GPU")
        return
    from .trt.backend import TrtBackend

    try:
        t0 = time.perf_counter()
        be = TrtBackend.from_bundle(bundle, mode=engine_mode)
        add(
            "tensorrt engine",
            PASS,
            "{} engine ready in {:.1f} s ({} tensors refitted per switch, as {} {} weights{})".format(
                be.precision,
                time.perf_counter() - t0,
                len(be.plan),
                be.form,
                "device" if be.device_weights else "host",
                ", {} constant companion(s)".format(len(be.companions)) if be.companions else "",
            ),
        )
    except Exception as exc:
        add("tensorrt engine", FAIL, "{}: {}".format(type(exc).__name__, exc))
        return
    dla_report(add, be)
    with be:
        compare_to_reference(add, be, bundle, samples, reference, atol_rel)
        refit_timing(add, be, bundle, refits, samples, reference, atol_rel)
        penalty_check(add, be, samples)


def uses_features(bundle) -> bool:
    """Whether the bundle's learned router reads the networks' pooled features."""
    r = bundle.routing
    return bool(r is not None and r.learned is not None and r.learned.features)


def compare_to_reference(add, be, bundle, samples, reference, atol_rel):
    """Every network on the engine against ONNX Runtime's logits, and its pooled features where
    the router reads them (each network still runs without a reference)."""
    from .backends.base import head_rows, targets
    from .backends.verify import compare

    worst, worst_f, agree, features = 0.0, 0.0, True, uses_features(bundle)
    for target in targets(bundle.num_superclasses):
        be.switch(target)
        out, feats = be.infer_features(samples) if features else (be.infer(samples), None)
        if reference is None:
            continue
        ref, ref_f = reference[target]
        same, rel = compare(out, ref, head_rows(bundle, target))
        worst, agree = max(worst, rel), agree and same
        if features:
            worst_f = max(worst_f, compare(cast(np.ndarray, feats), ref_f, ref_f.shape[1])[1])
    if reference is not None:
        ok = agree and max(worst, worst_f) <= atol_rel
        also = ", the router's features {:.2%} of their range".format(worst_f) if features else ""
        add(
            "tensorrt vs onnxruntime",
            PASS if ok else FAIL,
            "base + every subclass: top-1 {} on all samples, max |diff| {:.2%} of the logit range{} "
            "(limit {:.0%})".format("agrees" if agree else "DISAGREES", worst, also, atol_rel),
        )


def refit_timing(add, be, bundle, refits, samples=None, reference=None, atol_rel=0.05):
    """The refit time per switch (``trtexec --timeRefit`` style) over *refits* forced switches through every
    network, the base included; with a *reference*, the samples after each refit against ONNX Runtime's."""
    from .backends.base import head_rows, summarize, targets
    from .backends.verify import compare, describe

    cycle = targets(bundle.num_superclasses)
    be.timings.clear()
    worst, bad = 0.0, []
    for i in range(refits):
        target = cycle[(i + 1) % len(cycle)]  # subclass 0 first, the base network after the last subclass
        be.switch(target, force=True)
        if reference is not None:
            agree, rel = compare(be.infer(samples), reference[target][0], head_rows(bundle, target))
            worst = max(worst, rel)
            if not agree or rel > atol_rel:
                bad.append("refit {} ({})".format(i + 1, describe(bundle, target)))
    s = summarize(be.timings.samples.get("refit", []))
    sw = summarize(be.timings.samples.get("switch", []))
    detail = (
        "refit: mean {:.3f} ms, median {:.3f} ms, p90 {:.3f} ms, p99 {:.3f} ms; whole switch "
        "(decode + H2D + kernel + refit) median {:.3f} ms over {} switches".format(
            s["mean"], s["median"], s["p90"], s["p99"], sw["median"], sw["count"]
        )
    )
    if reference is not None:
        detail += "; the samples after each refit {} ONNX Runtime's (max |diff| {:.2%}, limit {:.0%}){}".format(
            "DIFFER FROM" if bad else "match", worst, atol_rel, ": " + ", ".join(bad[:4]) if bad else ""
        )
    add("refit timing", FAIL if bad else PASS, detail)


def penalty_check(add, be, samples) -> None:
    """The refittable engine's latency over a non-refittable one's (:mod:`.trt.penalty`), reported as a figure."""
    from .trt.penalty import TARGET, refit_penalty

    try:
        p = refit_penalty(be, samples)
    except Exception as exc:
        add("refit penalty", FAIL, "non-refittable reference engine: {}: {}".format(type(exc).__name__, exc))
        return
    add(
        "refit penalty",
        INFO,
        "refittable {:.3f} ms / non-refittable {:.3f} ms per batch of {} (medians of {}) = {:.3f}, {} the {} "
        "target".format(
            p["refittable_ms"], p["fixed_ms"], p["batch"], p["iterations"], p["ratio"],
            "within" if p["within"] else "ABOVE", TARGET,
        ),
    )  # fmt: skip


def dla_report(add, be) -> None:
    """For an engine built for a DLA core: its configuration, and an honest "unverified" for where its layers run.

    The engine inspector lists the layers, but with the default profiling verbosity edgetool builds with
    it does not say which device runs each, and no DLA device has run this check."""
    entry = getattr(be, "engine_entry", None) or {}
    if entry.get("dla_core") is None:
        return
    try:
        layers = be.sub.layer_names()
    except Exception as exc:  # the inspector is a report, not the engine: its failure is the report's line
        layers, why = None, "{}: {}".format(type(exc).__name__, exc)
    else:
        why = "no engine inspector in this TensorRT"
    listed = "{} layers listed by the engine inspector".format(len(layers)) if layers is not None else why
    add(
        "dla",
        INFO,
        "engine for DLA core {0} with GPU fallback, batch {1}; {2}; which layers run on the DLA: unverified (never "
        "run on a DLA device; the trtexec line `{3}` prints, with --dumpLayerInfo --profilingVerbosity=detailed "
        "added, lists them)".format(
            entry["dla_core"],
            entry.get("max_batch", "?"),
            listed,
            commands.engine_onnx_dla("BUNDLE", entry["dla_core"]),
        ),
    )
