"""One profiling run: every measurement of :mod:`.stages`, memory, projections, one dict.

The dict is the JSON report (schema ``edgetool.profile/1``); the Markdown and HTML reports
are rendered from it.  A flat bundle (``"model": "flat"``) is one network: its report has the
network's inference, cold load, end to end (one row, ``flat``), throughput and resident
memory, and none of what only Super-Sub has (superclasses, switches, deltas and codecs,
vanilla, projections of a switch).  :mod:`.compare` sets two reports side by side
(``edgetool profile A B``).
"""

from __future__ import annotations

import platform
import time
from typing import Any, Callable, Dict, Optional, Sequence

from edgetool import __version__

from ..bundle.reader import Bundle
from ..classifier import POLICIES
from . import memprobe, stages
from .engines import MODES, open_backend
from .project import project
from .system import gpu_memory, jetson_figures, machine
from .tegrastats import Sampler

SCHEMA = "edgetool.profile/1"


def _nothing(step: str) -> None:
    pass


def bundle_summary(bundle, path: str) -> dict:
    sizes = bundle.stored_bytes()
    base = bundle.manifest["base"]
    int8 = int(base.get("int8_weight_bytes") or bundle.layout.int8_nbytes)
    samples = (bundle.manifest.get("samples") or {}).get("sha256")
    if bundle.kind == "flat":  # one network: no superclasses, no deltas worth a figure (they are zero)
        return {
            "path": path,
            "classes": bundle.head_width,
            "base_onnx_bytes": sizes["base"],
            "bytes_on_disk": sizes["total"],
            "refit_bytes": bundle.layout.total_nbytes,
            "int8_weight_bytes": int8,
            "samples_sha256": samples,
        }
    changed = [d["changed_int8"] / int8 for d in bundle.deltas if "changed_int8" in d]
    return {
        "path": path,
        "samples_sha256": samples,
        "superclasses": bundle.num_superclasses,
        "codec": bundle.deltas[0]["codec"],
        "base_onnx_bytes": sizes["base"],
        "deltas_bytes": sizes["deltas"],
        "bytes_on_disk": sizes["total"],
        "refit_bytes": bundle.layout.total_nbytes,
        "int8_weight_bytes": int8,
        "changed_codes_fraction": (sum(changed) / len(changed)) if changed else None,
        "delta_bytes_mean": sizes["deltas"] / max(1, bundle.num_superclasses),
    }


def storage_vs_n(summary: dict, max_n: int = 20) -> list:
    """Bytes stored for N superclasses: one flat network, vanilla N+1 networks, efficient 1 + N deltas."""
    base, delta = summary["base_onnx_bytes"], summary["delta_bytes_mean"]
    return [
        {"n": n, "single": base, "vanilla": (n + 1) * base, "efficient": base + n * delta} for n in range(1, max_n + 1)
    ]


def memory_section(path: str, threads: int, step: Callable[[str], None], flat: bool = False) -> dict:
    """Resident memory of each form (a flat bundle: its one network, the ``single`` form, alone)."""
    forms = {}
    for form in ("single",) if flat else memprobe.FORMS:
        step("memory: " + form)
        forms[form] = memprobe.measure(form, path, threads)
    if flat:
        return {"forms": forms, "gpu": gpu_memory()}
    single = max(1, forms["single"]["resident_bytes"])
    return {
        "forms": forms,
        "gpu": gpu_memory(),
        "ratios": {
            "efficient_over_single": forms["efficient"]["resident_bytes"] / single,
            "vanilla_over_single": forms["vanilla"]["resident_bytes"] / single,
            "efficient_over_vanilla": forms["efficient"]["resident_bytes"] / max(1, forms["vanilla"]["resident_bytes"]),
        },
    }


def run_profile(
    path: str,
    backend: str = "onnxruntime",
    iterations: int = 20,
    warmup: int = 3,
    batch: int = 8,
    threads: int = 0,
    modes: Sequence[str] = MODES,
    policies: Sequence[str] = POLICIES,
    codecs: Sequence[str] = ("zstd", "7z"),
    memory: bool = True,
    device_profile: Optional[str] = None,
    step: Callable[[str], None] = _nothing,
) -> dict:
    """Profile the bundle at *path* on this machine and return the report dict."""
    bundle = Bundle.open(path)
    try:
        summary = bundle_summary(bundle, path)
        images = stages.sample_batch(bundle, batch)
        report = {
            "schema": SCHEMA,
            "edgetool_version": __version__,
            "machine": machine(),
            "python": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "backend": backend,
            "onnxruntime": _version("onnxruntime"),
            "device_profile": device_profile,
            "settings": {"iterations": iterations, "warmup": warmup, "batch": batch, "threads": threads},
            "bundle": summary,
            "model": bundle.kind,
        }
        if bundle.kind == "flat":
            report.update(_flat_timings(bundle, backend, images, iterations, warmup, threads, step))
        else:
            report["storage"] = storage_vs_n(summary)
            report.update(_timings(bundle, backend, images, iterations, warmup, threads, modes, policies, codecs, step))
        if memory:
            report["memory"] = memory_section(path, threads, step, flat=bundle.kind == "flat")
        telemetry = report.pop("telemetry", None)
        report["jetson"] = jetson_figures(telemetry, headline_throughput(report))
        if bundle.kind != "flat":
            report["projections"] = project(report["stages"], summary["refit_bytes"], summary["codec"])
            report["ratios"] = ratios(report)
        return report
    finally:
        bundle.close()


def headline_throughput(r: dict) -> float:
    """Images per second at the profile's batch: two-stage superclass-batched, or the flat network's."""
    t = r["throughput"]
    return t["flat_images_per_s"] if r.get("model") == "flat" else t["two_stage_images_per_s"]


def _flat_timings(bundle, backend, images, iterations, warmup, threads, step) -> dict:
    """A flat bundle's network: inference, end to end (once: no policy routes it), throughput, cold load."""
    step("flat network")
    be = open_backend(backend, bundle, "one-engine", threads)
    try:
        out: Dict[str, Any] = {"providers": list(getattr(be, "providers", [])) or None}
        out["stages"] = stages.inference(be, images[:1], iterations, warmup)
        with Sampler() as tegra:
            ips = stages.throughput(be, bundle, len(images), iterations, warmup)
        out["throughput"] = {"flat_images_per_s": ips}
        out["telemetry"] = tegra.result
        step("end to end, flat")
        out["end_to_end"] = {"one-engine": stages.end_to_end(be, images, max(1, iterations // 4), 1)}
    finally:
        be.close()
    step("cold load")
    out["stages"].update(stages.cold_load(bundle, max(3, iterations // 2), threads))
    return out


def _timings(bundle, backend, images, iterations, warmup, threads, modes, policies, codecs, step) -> dict:
    out: Dict[str, Any] = {"end_to_end": {}}
    for mode in modes:
        step("engine mode " + mode)
        be = open_backend(backend, bundle, mode, threads)
        try:
            if mode == modes[0]:
                out["providers"] = list(getattr(be, "providers", [])) or None
                step("switch stages")
                out["stages"] = stages.switch_stages(bundle, be, iterations, warmup)
                out["stages"].update(stages.inference(be, images[:1], iterations, warmup))
                with Sampler() as tegra:  # Jetson telemetry beside the two-stage throughput, where present
                    ips = stages.throughput(be, bundle, len(images), iterations, warmup)
                out["throughput"] = {"two_stage_images_per_s": ips}
                out["telemetry"] = tegra.result
            step("end to end, " + mode)
            out["end_to_end"][mode] = stages.end_to_end(be, images, max(1, iterations // 4), 1, policies)
        finally:
            be.close()
    step("codecs")
    out["codecs"] = stages.codec_compare(bundle, codecs, iterations)
    step("cold load and comparisons")
    out["stages"].update(stages.cold_load(bundle, max(3, iterations // 2), threads))
    cmp = stages.comparison(bundle, images, len(images), iterations, warmup, threads)
    out["stages"]["single_inference"] = cmp.pop("single_inference")
    out["stages"]["vanilla_per_image"] = cmp.pop("vanilla_per_image")
    out["throughput"].update(cmp)
    return out


def ratios(r: dict) -> dict:
    """The headline ratios, each defined by its name."""
    s = r["stages"]
    med = {k: v.get("median") for k, v in s.items() if isinstance(v, dict) and v.get("count")}
    codecs = r.get("codecs", {})
    out = {
        "cold_load_over_switch": _div(med.get("cold_load"), med.get("switch_to_subclass")),
        "two_stage_over_single_throughput": _div(
            r["throughput"]["two_stage_images_per_s"], r["throughput"]["single_throughput_images_per_s"]
        ),
    }
    if "7z" in codecs and "zstd" in codecs:
        out["7z_over_zstd_decode"] = _div(codecs["7z"]["decode_ms"]["median"], codecs["zstd"]["decode_ms"]["median"])
    if "memory" in r:
        out.update({k: v for k, v in r["memory"]["ratios"].items()})
    return out


def _version(module: str):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _div(a, b):
    return (a / b) if (a is not None and b) else None
