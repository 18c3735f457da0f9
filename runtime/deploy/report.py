"""Human output of deploy: upload progress and the per-host summary (a target's status: :mod:`..target.status`)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Dict, List

MIB = 1024.0 * 1024.0


class Progress:
    """Upload progress of one host: a live line on a terminal, a line per quarter otherwise."""

    _lock = threading.Lock()

    def __init__(self, label: str, stream=None, live=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.total = self.sent = 0
        self.t0 = time.monotonic()
        self._shown = self._quarter = 0.0

    def start(self, total: int, files: int) -> None:
        self.total, self.sent, self.t0, self._quarter = int(total), 0, time.monotonic(), 0.0
        self._write("{}: uploading {} file(s), {:.2f} MiB".format(self.label, files, total / MIB), final=True)

    def update(self, n: int) -> None:
        self.sent += n
        frac = self.sent / self.total if self.total else 1.0
        now = time.monotonic()
        if self.live and now - self._shown >= 0.2:
            self._shown = now
            self._write(self._line(frac), final=False)
        elif not self.live and frac >= self._quarter + 0.25:
            self._quarter = int(frac * 4) / 4.0
            self._write(self._line(frac), final=True)

    def _line(self, frac: float) -> str:
        rate = self.sent / max(time.monotonic() - self.t0, 1e-6) / MIB
        return "{}: {:3.0f}%  {:.2f}/{:.2f} MiB  {:.1f} MiB/s".format(
            self.label, 100 * frac, self.sent / MIB, self.total / MIB, rate
        )

    def done(self) -> None:
        if self.live and self.total:
            self._write(self._line(1.0), final=True)

    def _write(self, text: str, final: bool) -> None:
        with self._lock:
            end = "\n" if final or not self.live else ""
            self.stream.write(("\r" + text + "\x1b[K" if self.live else text) + end)
            self.stream.flush()


def format_summary(results: List[Dict]) -> str:
    width = max([len(r["host"]) for r in results] + [4])
    lines = ["{:<{w}}  {:<6}  {:>6}  {}".format("host", "result", "time", "detail", w=width)]
    for r in results:
        if r["ok"]:
            detail = r.get("detail", "")
        else:
            detail = r["error"]
        result = "ok" if r["ok"] else ("skip" if r.get("skipped") else "STOP" if r.get("stopped") else "FAILED")
        lines.append("{:<{w}}  {:<6}  {:>5.1f}s  {}".format(r["host"], result, r.get("seconds", 0.0), detail, w=width))
    stopped = sum(bool(r.get("stopped")) for r in results)
    failed = sum(not r["ok"] and not r.get("skipped") and not r.get("stopped") for r in results)
    skipped = sum(bool(r.get("skipped")) for r in results)
    lines.append(
        "{} host(s): {} ok, {} failed{}{}".format(
            len(results),
            len(results) - failed - skipped - stopped,
            failed,
            ", {} stopped".format(stopped) if stopped else "",
            ", {} skipped".format(skipped) if skipped else "",
        )
    )
    return "\n".join(lines)
