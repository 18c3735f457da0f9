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

TEGRASTATS_RAM = re.compile(r"RAM (\d+)/(\d+)MB")
TEGRASTATS_EMC = re.compile(r"EMC_FREQ (\d+)%")
TEGRASTATS_GPU = re.compile(r"GR3D_FREQ (\d+)%")
TEGRASTATS_POWER = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)mW/(\d+)mW")


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


def parse_tegrastats(line: str) -> Dict[str, object]:
    """The figures of one tegrastats line: RAM (shared CPU/GPU), EMC and GR3D load, power rails."""
    out: Dict[str, object] = {}
    m = TEGRASTATS_RAM.search(line)
    if m:
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    m = TEGRASTATS_EMC.search(line)
    if m:
        out["emc_load_percent"] = int(m.group(1))
    m = TEGRASTATS_GPU.search(line)
    if m:
        out["gr3d_load_percent"] = int(m.group(1))
    rails = {name: {"now_mw": int(now), "avg_mw": int(avg)} for name, now, avg in TEGRASTATS_POWER.findall(line)}
    if rails:
        out["power_mw"] = rails
    return out


def _run(cmd, timeout=5.0) -> Optional[str]:
    if not shutil.which(cmd[0]):
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def tegrastats_sample() -> Optional[str]:
    """One line of ``tegrastats`` (None where it is absent or prints nothing)."""
    if not shutil.which("tegrastats"):
        return None
    try:
        p = subprocess.Popen(
            ["tegrastats", "--interval", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
    except OSError:
        return None
    try:
        line = p.stdout.readline() if p.stdout else ""
    finally:
        p.kill()
        p.wait()
    return line.strip() or None


def jetson_figures() -> Dict[str, object]:
    """tegrastats, nvpmodel mode and jetson_clocks state on a Jetson; a reason elsewhere."""
    model = jetson_model()
    if not model:
        return {"available": False, "reason": "not a Jetson (no /proc/device-tree/model)"}
    out: Dict[str, object] = {"available": True, "model": model}
    line = tegrastats_sample()
    out["tegrastats"] = parse_tegrastats(line) if line else {"reason": "tegrastats not found or silent"}
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
