"""Jetson telemetry from ``tegrastats``: its lines parsed (Nano and TX2 on JetPack 4, Xavier,
Orin on JetPack 5 and 6), and a sampler that runs it beside a measurement.

Power rails are printed as ``NAME now/avg`` in milliwatts, with an ``mW`` suffix from JetPack 5
on and without one before.  The board's input rail (``VDD_IN`` on Orin, ``POM_5V_IN`` on Nano,
``VIN_SYS_5V0`` on Xavier with JetPack 5, ``SYS5V`` with JetPack 4) is the total; where none is
printed the rails are summed and the report says so.
"""

from __future__ import annotations

import os
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


# What a Jetson can print: figures outside these are not measurements (a broken or foreign tool).
MAX_RAM_MB = 1 << 24  # 16 TiB
MAX_RAIL_MW = 1_000_000  # 1 kW on one rail; the largest Jetson draws about 60 W
MAX_LINE = 1 << 16  # bytes; a longer "line" is not tegrastats output
MAX_LINES = 100_000  # kept per measurement (about 3 h at the 100 ms default)


class Implausible(ValueError):
    """A tegrastats line whose figures no Jetson prints."""


def parse(line: str) -> Dict[str, Any]:
    """The figures of one tegrastats line: RAM (shared by CPU and GPU), EMC and GR3D load, and the
    power rails (now and average, mW).  Figures no Jetson can print (RAM used above its total, a
    load over 100%, a rail over 1 kW) raise :class:`Implausible`: the line is no sample."""
    out: Dict[str, Any] = {}
    m = RAM.search(line)
    if m:
        used, total = int(m.group(1)), int(m.group(2))
        if not 0 < total <= MAX_RAM_MB or used > total:
            raise Implausible("RAM {}/{}MB".format(m.group(1)[:24], m.group(2)[:24]))
        out["ram_used_mb"], out["ram_total_mb"] = used, total
    for key, regex, name in (("emc_load_percent", EMC, "EMC_FREQ"), ("gr3d_load_percent", GPU, "GR3D_FREQ")):
        m = regex.search(line)
        if m:
            value = int(m.group(1))
            if value > 100:
                raise Implausible("{} {}%".format(name, m.group(1)[:24]))
            out[key] = value
    rails = {}
    for name, now, avg in POWER.findall(line):
        if int(now) > MAX_RAIL_MW or int(avg) > MAX_RAIL_MW:
            raise Implausible("{} {}/{} mW".format(name, now[:24], avg[:24]))
        rails[name] = {"now_mw": int(now), "avg_mw": int(avg)}
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
    then holds :func:`summarize` of its lines (None where tegrastats is absent or printed nothing;
    ``{"reason": ...}`` where it printed lines of which none is a measurement).

    Its output is untrusted: it is read as bytes, a line is at most :data:`MAX_LINE` bytes (a longer
    one is dropped, so memory stays bounded), at most :data:`MAX_LINES` are kept, and a line that is
    not text or holds impossible figures is rejected and counted, never reported as measured."""

    def __init__(self, interval_ms: int = 100):
        self.interval_ms = int(interval_ms)
        self.lines: List[str] = []
        self.rejected: List[str] = []  # why, per rejected line (the first few kept)
        self.rejected_count = 0
        self.seen = 0  # lines printed, rejected ones included
        self.result: Optional[Dict[str, Any]] = None
        self._proc: Optional[subprocess.Popen] = None
        self._thread: Optional[threading.Thread] = None
        self._t0 = 0.0

    def _reject(self, why: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < 5:
            self.rejected.append(why)

    def _take(self, raw: bytes) -> None:
        raw = raw.strip()
        if not raw:
            return
        self.seen += 1
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            self._reject("not text")
            return
        if len(self.lines) < MAX_LINES:
            self.lines.append(line)

    def _read(self, fd: int) -> None:
        """Lines of *fd* until its end; never raises (an error ends the reading, with its reason)."""
        pending, overlong = b"", False
        try:
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                pending += chunk
                while True:
                    cut = pending.find(b"\n")
                    if cut < 0:
                        break
                    line, pending = pending[:cut], pending[cut + 1 :]
                    if overlong:
                        overlong = False  # the end of a line already rejected
                    else:
                        self._take(line)
                if len(pending) > MAX_LINE:
                    if not overlong:
                        self.seen += 1
                        self._reject("a line over {} bytes".format(MAX_LINE))
                    pending, overlong = b"", True
            if pending and not overlong:
                self._take(pending)
        except Exception as exc:  # noqa: BLE001 - a reader thread must not die with a traceback
            self._reject("unreadable ({})".format(exc))

    def __enter__(self) -> "Sampler":
        exe = shutil.which("tegrastats")
        if exe:
            try:
                self._proc = subprocess.Popen(
                    [exe, "--interval", str(self.interval_ms)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            except OSError:
                self._proc = None
        if self._proc is not None and self._proc.stdout is not None:
            self._thread = threading.Thread(target=self._read, args=(self._proc.stdout.fileno(),), daemon=True)
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
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        samples = []
        for line in list(self.lines):
            try:
                sample = parse(line)
            except Implausible as why:
                self._reject("impossible figures: {}".format(why))
                continue
            if sample:
                samples.append(sample)
        if samples:
            self.result = summarize(samples, seconds)
            if self.rejected_count:
                self.result["rejected_lines"] = self.rejected_count
                self.result["rejected_because"] = self.rejected[0]
        elif self.rejected_count or self.lines:
            self.result = {
                "reason": "tegrastats printed {} line(s), none a measurement ({})".format(
                    self.seen, self.rejected[0] if self.rejected else "no figures in them"
                )
            }
