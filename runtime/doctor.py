"""``edgetool doctor``: prove the device path on this machine, check by check.

Each check prints PASS, FAIL or SKIP (with the reason).  Without a GPU, TensorRT or
pycuda, the GPU checks are skipped and say why; everything that can run still runs.
The exit status is non-zero when any check fails.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np

from .check_status import FAIL, INFO, PASS, SKIP, Check
from . import commands
from .doctor_trt import compare_to_reference, trt_checks, uses_features  # noqa: F401  (callers use doctor.*)
from .machine import platform_info


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
        add("bundle", SKIP, "no bundle given (`{}` checks a bundle end to end)".format(commands.doctor()))
        return checks

    opened = open_bundle(add, bundle_path)
    if opened is None:
        return checks
    bundle, samples = opened
    reference = ort_reference(add, bundle, samples)
    classify_check(add, bundle, samples)
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


def classify_check(add, bundle, samples):
    """The samples through the classifier as ``classify`` runs it (ONNX Runtime), under each policy for
    files; ``--json`` carries the labels.  batched must label as per-image (one switch per superclass
    instead of per image); topk may differ where it tries a second superclass.  A flat bundle has one
    network and no routing: every policy must give the same labels."""
    from .backends.ort import OrtBackend
    from .choices import FILE_POLICIES
    from .classifier import SuperSubClassifier
    from .errors import EdgetoolError

    labels = {}
    try:
        with OrtBackend(bundle) as be:
            for policy in FILE_POLICIES:
                preds = SuperSubClassifier(be, policy=policy).classify(samples)
                labels[policy] = [[p.superclass_name, p.label] for p in preds]
    except EdgetoolError as exc:
        add("classify", FAIL, str(exc))
        return
    n = len(samples)
    same = {p: sum(a == b for a, b in zip(labels[p], labels["per-image"])) for p in FILE_POLICIES}
    if bundle.kind == "flat":
        ok = all(v == n for v in same.values())
        detail = "flat: one network, no routing; {}, batched and topk label {} of {} samples alike".format(
            "per-image", min(same.values()), n
        )
    else:
        ok = same["batched"] == n
        detail = "{} samples: batched labels {} as per-image does, topk {} (it may try a second superclass)".format(
            n, same["batched"], same["topk"]
        )
    add("classify", PASS if ok else FAIL, detail).labels = labels


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
