"""``edgetool doctor``: prove the device path on this machine, check by check.

Each check prints PASS, FAIL or SKIP (with the reason).  Without a GPU, TensorRT or
pycuda, the GPU checks are skipped and say why; everything that can run still runs.
The exit status is non-zero when any check fails.
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, cast

import numpy as np

from .machine import platform_info

PASS, FAIL, SKIP, INFO = "PASS", "FAIL", "SKIP", "INFO"


class Check:
    def __init__(self, name: str, status: str, detail: str = ""):
        self.name, self.status, self.detail = name, status, detail

    def to_dict(self):
        return {"check": self.name, "status": self.status, "detail": self.detail}


def run(
    bundle_path: Optional[str],
    refits: int = 20,
    atol_rel: float = 0.05,
    emit: Optional[Callable[[Check], None]] = None,
    engine_mode: str = "one-engine",
) -> List[Check]:
    checks: List[Check] = []

    def add(name, status, detail=""):
        c = Check(name, status, detail)
        checks.append(c)
        if emit is not None:
            emit(c)
        return c

    gpu = platform_checks(add, platform_info())
    kernel_check(add, gpu)
    if bundle_path is None:
        add("bundle", SKIP, "no bundle given (edgetool doctor BUNDLE checks a bundle end to end)")
        return checks

    opened = open_bundle(add, bundle_path)
    if opened is None:
        return checks
    bundle, samples = opened
    reference = ort_reference(add, bundle, samples)
    weight_form_checks(add, bundle, samples, reference)
    trt_checks(add, bundle, samples, reference, gpu, refits, atol_rel, engine_mode)
    return checks


def platform_checks(add, info):
    """The platform, package, GPU and memory lines; returns the GPU's description."""
    gpu = info["gpu"]
    add(
        "platform",
        INFO,
        "{} / Python {} / L4T {} / JetPack {}".format(
            info.get("device", info["machine"]), info["python"], info.get("l4t", "n/a"), info.get("jetpack", "n/a")
        ),
    )
    add(
        "packages",
        INFO,
        "TensorRT {} / onnxruntime {} {} / pycuda {} / numpy {}".format(
            info["tensorrt"], info["onnxruntime"], info.get("onnxruntime_providers", ""), info["pycuda"], info["numpy"]
        ),
    )
    if gpu.get("available"):
        add(
            "gpu",
            PASS,
            "{} (sm {}), driver {}, {} / {} MiB free".format(
                gpu["name"], gpu["compute_capability"], gpu["cuda_driver"], gpu["free_mib"], gpu["total_mib"]
            ),
        )
    else:
        add("gpu", SKIP, gpu.get("reason", "no GPU"))
    add("memory", INFO, "host: {} MiB available".format(info.get("host_mem_available_mib", "?")))
    return gpu


def open_bundle(add, bundle_path):
    """The verified bundle and its samples, or None once a check has failed."""
    from .bundle.reader import Bundle
    from .errors import EdgetoolError

    try:
        bundle = Bundle.open(bundle_path)
    except EdgetoolError as exc:
        add("bundle", FAIL, str(exc))
        return None
    nets = "{} subclass networks".format(bundle.num_superclasses)
    nets = "flat: one network over {} classes".format(bundle.head_width) if bundle.kind == "flat" else nets
    add("bundle", PASS, "{} files verified (sha256), {}".format(len(bundle.files()), nets))
    try:
        samples = bundle.samples()
    except EdgetoolError as exc:
        add("samples", FAIL, str(exc))
        return None
    if samples is None:
        add("samples", FAIL, "bundle has no samples.npy to compare backends on")
        return None
    return bundle, samples


def weight_form_checks(add, bundle, samples, reference):
    """The refit arrays of each weight form reproduce every network, in ONNX Runtime, without TensorRT."""
    from .backends.base import head_rows
    from .trt.emulate import emulate_refit
    from .trt.weight_forms import FORMS, weight_form

    try:
        import onnx  # noqa: F401
    except ImportError:
        add("weight forms", SKIP, "onnx is not installed (pip install 'edgetool[jetson]')")
        return
    try:
        import tensorrt
    except ImportError:
        forms = list(FORMS)  # no TensorRT here: prove every form
    else:
        from . import device_profiles
        from .trt.loader import trt_version

        name = device_profiles.detect()
        precision = device_profiles.load(name)["precision"] if name else "int8"
        forms = [weight_form(trt_version(tensorrt), precision)]
    for form in forms:
        try:
            emulated = emulate_refit(bundle, form, samples)
        except Exception as exc:
            add("weight form " + form, FAIL, "{}: {}".format(type(exc).__name__, exc))
            continue
        same = all(np.array_equal(got, own) for got, own in emulated.values())
        detail = "engine model + refit arrays {} each network's own engine model (base + {} subclasses)".format(
            "equal" if same else "DIFFER FROM", bundle.num_superclasses
        )
        ok = same
        if form != "fp16" and reference is not None:
            worst = 0.0
            for target, (got, _) in emulated.items():
                n = head_rows(bundle, target)
                worst = max(worst, float(np.abs(got[:, :n] - reference[target][0][:, :n]).max()))
            ok = ok and worst <= 1e-5
            detail += "; max |diff| to ONNX Runtime {:.1e}".format(worst)
        add("weight form " + form, PASS if ok else FAIL, detail)


def ort_reference(add, bundle, samples):
    """{target: (ONNX Runtime's logits, its pooled features where the router reads them, else None)}."""
    from .backends.base import targets
    from .errors import EdgetoolError

    try:
        from .backends.ort import OrtBackend

        ref = {}
        with OrtBackend(bundle) as be:
            for target in targets(bundle.num_superclasses):
                be.switch(target)
                ref[target] = be.infer_features(samples) if uses_features(bundle) else (be.infer(samples), None)
        add(
            "onnxruntime",
            PASS,
            "base + {} subclass networks run on {} samples ({})".format(
                bundle.num_superclasses, len(samples), ", ".join(be.providers)
            ),
        )
        return ref
    except EdgetoolError as exc:
        add("onnxruntime", FAIL, str(exc))
        return None


def kernel_check(add, gpu):
    if not gpu.get("available"):
        add("cuda kernel", SKIP, "no GPU: the delta kernel cannot run here")
        return
    try:
        import pycuda.autoinit  # noqa: F401

        from .trt.delta_apply import compile_module
        from .trt.kernel_check import check_kernel

        mod = compile_module()
        res = check_kernel(mod)
        status = PASS if res["exact"] else FAIL
        add(
            "cuda kernel",
            status,
            "bit-exact vs numpy on {} random bytes incl. wrap-around; {:.1f} GB/s".format(res["nbytes"], res["gbps"]),
        )
    except Exception as exc:
        add("cuda kernel", FAIL, "{}: {}".format(type(exc).__name__, exc))


def trt_checks(add, bundle, samples, reference, gpu, refits, atol_rel, engine_mode):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from .errors import MissingDependencyError

        add("tensorrt engine", SKIP, str(MissingDependencyError("tensorrt")))
        add("tensorrt vs onnxruntime", SKIP, "needs TensorRT")
        add("refit timing", SKIP, "needs TensorRT")
        return
    if not gpu.get("available"):
        add("tensorrt engine", SKIP, "no GPU")
        return
    from .trt.backend import TrtBackend

    try:
        t0 = time.perf_counter()
        be = TrtBackend(bundle, mode=engine_mode)
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
    with be:
        compare_to_reference(add, be, bundle, samples, reference, atol_rel)
        refit_timing(add, be, bundle, refits)


def uses_features(bundle) -> bool:
    """Whether the bundle's learned router reads the networks' pooled features."""
    r = bundle.routing
    return bool(r is not None and r.learned is not None and r.learned.features)


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / max(1e-6, np.abs(ref).max()))


def compare_to_reference(add, be, bundle, samples, reference, atol_rel):
    """Every network on the engine against ONNX Runtime's logits, and its pooled features where
    the router reads them (each network still runs without a reference)."""
    from .backends.base import head_rows, targets

    worst, worst_f, agree, features = 0.0, 0.0, True, uses_features(bundle)
    for target in targets(bundle.num_superclasses):
        be.switch(target)
        out, feats = be.infer_features(samples) if features else (be.infer(samples), None)
        if reference is None:
            continue
        ref, ref_f = reference[target]
        n = head_rows(bundle, target)
        worst = max(worst, _rel(out[:, :n], ref[:, :n]))
        agree &= bool((out[:, :n].argmax(1) == ref[:, :n].argmax(1)).all())
        if features:
            worst_f = max(worst_f, _rel(cast(np.ndarray, feats), ref_f))
    if reference is not None:
        ok = agree and max(worst, worst_f) <= atol_rel
        also = ", the router's features {:.2%} of their range".format(worst_f) if features else ""
        add(
            "tensorrt vs onnxruntime",
            PASS if ok else FAIL,
            "base + every subclass: top-1 {} on all samples, max |diff| {:.2%} of the logit range{} "
            "(limit {:.0%})".format("agrees" if agree else "DISAGREES", worst, also, atol_rel),
        )


def refit_timing(add, be, bundle, refits):
    from .backends.base import summarize

    be.timings.clear()
    for i in range(refits):
        be.switch(i % bundle.num_superclasses, force=True)
    s = summarize(be.timings.samples.get("refit", []))
    sw = summarize(be.timings.samples.get("switch", []))
    add(
        "refit timing",
        PASS,
        "refit: mean {:.3f} ms, median {:.3f} ms, p90 {:.3f} ms, p99 {:.3f} ms; whole switch "
        "(decode + H2D + kernel + refit) median {:.3f} ms over {} switches".format(
            s["mean"], s["median"], s["p90"], s["p99"], sw["median"], sw["count"]
        ),
    )
