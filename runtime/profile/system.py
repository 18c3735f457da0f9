"""The machine a profile runs on: CPU, memory, GPU memory, and Jetson tegrastats figures.

Everything here is best effort: a figure that this machine cannot give is reported as
``None`` with the reason, never guessed.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from typing import Dict, Optional

from ..machine import device_tree_model, gpu_info


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming this machine: CPU, cores, OS (and the Jetson model where present)."""
    jetson = jetson_model()
    cpu = "{} ({} cores), {} {}".format(cpu_name(), os.cpu_count(), platform.system(), platform.release())
    return "{}; {}".format(jetson, cpu) if jetson else cpu


def jetson_model() -> Optional[str]:
    model = device_tree_model()
    return model if "jetson" in model.lower() or "nvidia" in model.lower() else None


def proc_status() -> Dict[str, int]:
    """VmRSS (current) and VmHWM (peak) resident set of this process, in bytes."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def gpu_memory() -> Dict[str, object]:
    """Used and total GPU memory of CUDA device 0 (from machine.gpu_info), or why it is absent."""
    info = gpu_info()
    if not info["available"]:
        return {"available": False, "reason": info["reason"]}
    return {
        "available": True,
        "device": info["name"],
        "used_bytes": info["total_bytes"] - info["free_bytes"],
        "total_bytes": info["total_bytes"],
    }


def _run(cmd, timeout=5.0) -> Optional[str]:
    if not shutil.which(cmd[0]):
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def jetson_figures(telemetry: Optional[Dict[str, object]] = None, images_per_s: Optional[float] = None):
    """The Jetson block of a profile: the model, the nvpmodel mode, whether the clocks are pinned,
    the tegrastats means of a measurement (*telemetry*, :class:`.tegrastats.Sampler`) and the
    energy per image at *images_per_s*; why there is none elsewhere."""
    model = jetson_model()
    if not model and telemetry is None:
        why = "tegrastats printed nothing" if shutil.which("tegrastats") else "not a Jetson: no tegrastats"
        return {"available": False, "reason": why}
    out: Dict[str, object] = {"available": True, "model": model or "unknown (no Jetson model in the device tree)"}
    out["tegrastats"] = telemetry if telemetry is not None else {"reason": "tegrastats not found or silent"}
    total = (telemetry or {}).get("total_power")
    if total and images_per_s:
        out["energy_mj_per_image"] = total["mw"] / images_per_s  # type: ignore[index]
        out["energy_at"] = "two-stage throughput, {:.1f} images/s".format(images_per_s)
    mode = _run(["nvpmodel", "-q"])
    out["nvpmodel"] = mode.strip().splitlines()[0] if mode else None
    out["jetson_clocks"] = clocks_pinned()
    return out


def clocks_pinned() -> Optional[bool]:
    """True when every CPU's minimum frequency equals its maximum (what jetson_clocks sets)."""
    base = "/sys/devices/system/cpu"
    try:
        cpus = [c for c in os.listdir(base) if re.match(r"cpu\d+$", c)]
        states = []
        for c in cpus:
            d = os.path.join(base, c, "cpufreq")
            if os.path.isdir(d):
                with open(os.path.join(d, "scaling_min_freq")) as f1, open(os.path.join(d, "scaling_max_freq")) as f2:
                    states.append(f1.read().strip() == f2.read().strip())
        return all(states) if states else None
    except OSError:
        return None
