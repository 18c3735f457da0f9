"""The shape of a profile report (``edgetool.profile/1``), checked without extra packages."""

from __future__ import annotations

from typing import List

from .stats import PERCENTILE_ORDER, consistent

STAGES = (
    "delta_read",
    "sha256",
    "sha256_decoded",
    "add",
    "apply",
    "switch_to_subclass",
    "switch_to_base",
    "h2d_kernel",
    "refit",
    "superclass_inference",
    "subclass_inference",
    "cold_load",
    "single_inference",
    "vanilla_per_image",
)
TOP = {
    "schema": str,
    "edgetool_version": str,
    "machine": str,
    "python": str,
    "created": str,
    "backend": str,
    "settings": dict,
    "bundle": dict,
    "storage": list,
    "stages": dict,
    "end_to_end": dict,
    "throughput": dict,
    "codecs": dict,
    "jetson": dict,
    "projections": list,
    "ratios": dict,
}
BUNDLE = ("superclasses", "codec", "base_onnx_bytes", "deltas_bytes", "bytes_on_disk", "refit_bytes")
# A flat bundle is one network: no switch, deltas, codecs, vanilla comparison or switch projections.
FLAT_TOP = {k: t for k, t in TOP.items() if k not in ("storage", "codecs", "projections", "ratios")}
FLAT_STAGES = ("inference", "cold_load")
FLAT_BUNDLE = ("classes", "base_onnx_bytes", "bytes_on_disk", "refit_bytes")
ONLY_SUPER_SUB = ("storage", "codecs", "projections", "ratios")


def problems(report: dict) -> List[str]:
    """Every way *report* departs from the schema (an empty list when it conforms)."""
    flat = report.get("model") == "flat"
    top = FLAT_TOP if flat else TOP
    out = ["{}: missing or not {}".format(k, t.__name__) for k, t in top.items() if not isinstance(report.get(k), t)]
    if out:
        return out
    if report["schema"] != "edgetool.profile/1":
        out.append("schema: {!r}".format(report["schema"]))
    out += ["bundle.{}: missing".format(k) for k in (FLAT_BUNDLE if flat else BUNDLE) if k not in report["bundle"]]
    stages = report["stages"]
    out += ["stages.{}: missing".format(k) for k in (FLAT_STAGES if flat else STAGES) if k not in stages]
    if flat:
        out += ["{}: a flat bundle has none".format(k) for k in ONLY_SUPER_SUB if k in report]
        out += ["stages.{}: a flat bundle has no such stage".format(k) for k in stages if k not in FLAT_STAGES]
        if set(report["end_to_end"].get("one-engine", {})) != {"flat"} or len(report["end_to_end"]) != 1:
            out.append("end_to_end: a flat bundle has one row, one-engine flat")
    elif not any(k.startswith("decode_") for k in stages):
        out.append("stages.decode_<codec>: missing")
    for name, s in stages.items():
        out += _stat_problems("stages." + name, s)
    for mode, policies in report["end_to_end"].items():
        for policy, row in policies.items():
            out += _stat_problems("end_to_end.{}.{}".format(mode, policy), row.get("per_image_ms", {}))
            if not row.get("images_per_s", 0) > 0:
                out.append("end_to_end.{}.{}: images_per_s must be > 0".format(mode, policy))
    for name, c in report.get("codecs", {}).items():
        out += _stat_problems("codecs.{}.decode_ms".format(name), c.get("decode_ms", {}))
    if "memory" in report:
        for form in ("single",) if flat else ("single", "efficient", "vanilla"):
            if not report["memory"]["forms"].get(form, {}).get("resident_bytes", -1) >= 0:
                out.append("memory.forms.{}: no resident_bytes".format(form))
    if not all(p.get("estimate") is True for p in report.get("projections", [])):
        out.append("projections: every row must be labelled estimate")
    return out


def _stat_problems(where: str, s: dict) -> List[str]:
    if not isinstance(s, dict) or "count" not in s:
        return ["{}: not a statistics object".format(where)]
    if s["count"] == 0:
        return [] if "reason" in s else ["{}: no samples and no reason".format(where)]
    missing = [k for k in PERCENTILE_ORDER + ("mean",) if not isinstance(s.get(k), float)]
    if missing:
        return ["{}: missing {}".format(where, ", ".join(missing))]
    if not consistent(s):
        return [
            "{}: percentiles out of order ({})".format(
                where, ", ".join("{}={:.4g}".format(k, s[k]) for k in PERCENTILE_ORDER)
            )
        ]
    return []
