"""Estimates for other device profiles, from the figures measured here.

Every row is labelled ``"estimate": true``.  The model is deliberately simple and stated:

* CPU stages (delta read, sha256, decode) scale with single-core speed: ``measured / cpu_rel``;
* on a Jetson the add runs on the GPU: the delta is copied host-to-device (``2 x bytes``
  through the shared DRAM) and the kernel moves ``3 x bytes`` (read base and delta, write),
  at half the published DRAM bandwidth;
* the TensorRT refit and the inference are not projected: they need a measurement on the
  device (``edgetool profile --backend tensorrt`` there).
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
EFFICIENCY = 0.5  # fraction of the published DRAM bandwidth a copy or the kernel reaches
CPU_STAGES = ("delta_read", "decode")


def specs() -> Dict[str, dict]:
    with open(os.path.join(HERE, "device_specs.json")) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def project(stages: Dict[str, dict], refit_bytes: int, codec: str) -> List[dict]:
    """One estimate row per device profile from the measured stage medians."""
    med = {k: v.get("median") for k, v in stages.items() if v.get("count")}
    cpu_here = sum(float(med.get(s if s != "decode" else "decode_" + codec) or 0.0) for s in CPU_STAGES)
    rows = []
    for name, spec in sorted(specs().items()):
        gbs = spec["mem_gbs"] * EFFICIENCY
        cpu = cpu_here / spec["cpu_rel"]
        h2d = 2 * refit_bytes / (gbs * 1e9) * 1e3
        kernel = 3 * refit_bytes / (gbs * 1e9) * 1e3
        rows.append(
            {
                "profile": name,
                "estimate": True,
                "cpu": spec["cpu"],
                "mem_gbs": spec["mem_gbs"],
                "read_decode_ms": cpu,
                "h2d_ms": h2d,
                "add_kernel_ms": kernel,
                "switch_ms_without_refit": cpu + h2d + kernel,
                "not_projected": ["refit", "inference"],
            }
        )
    return rows
