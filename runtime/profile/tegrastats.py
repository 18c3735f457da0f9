"""Jetson telemetry from ``tegrastats``: its lines parsed (Nano and TX2 on JetPack 4, Xavier,
Orin on JetPack 5 and 6), and a sampler that runs it beside a measurement.

Power rails are printed as ``NAME now/avg`` in milliwatts, with an ``mW`` suffix from JetPack 5
on and without one before.  The board's input rail (``VDD_IN`` on Orin, ``POM_5V_IN`` on Nano,
``VIN_SYS_5V0`` on Xavier with JetPack 5, ``SYS5V`` with JetPack 4) is the total; where none is
printed the rails are summed and the report says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional

RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
EMC = re.compile(r"\bEMC_FREQ (\d+)%")
GPU = re.compile(r"\bGR3D_FREQ (\d+)%")
POWER = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "SYS5V", "VIN")


def parse(line: str) -> Dict[str, Any]:
    """The figures of one tegrastats line: RAM (shared by CPU and GPU), EMC and GR3D load, and the
    power rails (now and average, mW)."""
    out: Dict[str, Any] = {}
    m = RAM.search(line)
    if m:
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    m = EMC.search(line)
    if m:
        out["emc_load_percent"] = int(m.group(1))
    m = GPU.search(line)
    if m:
        out["gr3d_load_percent"] = int(m.group(1))
    rails = {name: {"now_mw": int(now), "avg_mw": int(avg)} for name, now, avg in POWER.findall(line)}
    if rails:
        out["power_mw"] = rails
    return out


def total_power(rails: Dict[str, float]) -> Dict[str, Any]:
    """The board's power from mean rail figures: its input rail, else the sum of the rails."""
    for name in INPUT_RAILS:
        if name in rails:
            return {"mw": rails[name], "from": name}
    return {"mw": sum(rails.values()), "from": "sum of " + ", ".join(sorted(rails))}


def summarize(samples: List[Dict[str, Any]], seconds: float) -> Dict[str, Any]:
    """Means over the samples of a measurement (RAM: the largest); None figures where none came."""

    def mean(key):
        v = [s[key] for s in samples if key in s]
        return sum(v) / len(v) if v else None

    rails: Dict[str, List[int]] = {}
    for s in samples:
        for name, r in (s.get("power_mw") or {}).items():
            rails.setdefault(name, []).append(r["now_mw"])
    means = {name: sum(v) / len(v) for name, v in rails.items()}
    ram = [s["ram_used_mb"] for s in samples if "ram_used_mb" in s]
    return {
        "samples": len(samples),
        "seconds": seconds,
        "power_mw": means,
        "total_power": total_power(means) if means else None,
        "gr3d_load_percent": mean("gr3d_load_percent"),
        "emc_load_percent": mean("emc_load_percent"),
        "ram_used_mb": max(ram) if ram else None,
        "ram_total_mb": next((s["ram_total_mb"] for s in samples if "ram_total_mb" in s), None),
    }


class Sampler:
    """``with Sampler() as t: ...`` runs ``tegrastats --interval MS`` beside the block; ``t.result``
    then holds :func:`summarize` of its lines (None where tegrastats is absent or printed none)."""

    def __init__(self, interval_ms: int = 100):
        self.interval_ms = int(interval_ms)
        self.lines: List[str] = []
        self.result: Optional[Dict[str, Any]] = None
        self._proc: Optional[subprocess.Popen] = None
        self._thread: Optional[threading.Thread] = None
        self._t0 = 0.0

    def _read(self, stream) -> None:
        for line in stream:
            if line.strip():
                self.lines.append(line.strip())

    def __enter__(self) -> "Sampler":
        exe = shutil.which("tegrastats")
        if exe:
            try:
                self._proc = subprocess.Popen(
                    [exe, "--interval", str(self.interval_ms)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            except OSError:
                self._proc = None
        if self._proc is not None and self._proc.stdout is not None:
            self._thread = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self._t0
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
        samples = [s for s in (parse(line) for line in self.lines) if s]
        self.result = summarize(samples, seconds) if samples else None
