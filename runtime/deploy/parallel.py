"""Many hosts at once: :func:`on_all` runs one function per host in threads, and :class:`Stop`
turns a signal into an orderly stop, so every host gets its result (the driver is :mod:`.driver`)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Callable, Dict, List, Optional

from ..errors import EdgetoolError, StoppedError


class Stop:
    """Shared by the hosts of a rollout: set when the command receives SIGINT, SIGTERM or SIGHUP.
    A host checks it before its upload, between the chunks of its upload and before its install;
    an install already running on the device is left to finish (the device's switch is atomic),
    so a stop never leaves a host half-done, and every host's outcome is known."""

    def __init__(self):
        self._event = threading.Event()
        self.exc: Optional[BaseException] = None
        self.more: List[int] = []  # signals after the first

    def defer(self) -> None:
        """From the first signal on, later ones are only counted (the second stops the waiting
        for hosts still running), so the summary and the report are always written."""
        import signal

        if threading.current_thread() is not threading.main_thread():
            return
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None:
                signal.signal(sig, lambda signum, frame: self.more.append(signum))

    def set(self, exc: BaseException) -> None:
        if self.exc is None:
            self.exc = exc
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def name(self) -> str:
        from ..signals import terminated_by

        term = terminated_by(self.exc) if self.exc is not None else None
        return term.args[0] if term is not None else "SIGINT"

    def check(self, when: str) -> None:
        if self.is_set():
            raise StoppedError("stopped by {} {}".format(self.name, when))


def on_all(transports, fn: Callable, jobs: int = 8, stop: Optional[Stop] = None) -> List[Dict]:
    """Run fn(transport) for every target in parallel; results in the order given.

    With *stop*: a signal (KeyboardInterrupt, which :mod:`..signals` makes of SIGTERM and SIGHUP)
    sets it instead of escaping; hosts not started are not started, running ones end at their next
    check (an install on the device is waited for), and every host still gets its result.  A
    second signal stops the waiting: a host still running is reported as unknown."""

    def guarded(t):
        t0 = time.monotonic()
        try:
            out = fn(t)
        except (EdgetoolError, OSError) as exc:
            out = {"host": t.label, "ok": False, "error": str(exc)}
        out.setdefault("seconds", time.monotonic() - t0)
        return out

    if not transports:
        return []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(jobs, len(transports))))
    futures: List[concurrent.futures.Future] = []
    try:
        for t in transports:
            futures.append(pool.submit(guarded, t))
        concurrent.futures.wait(futures)
    except KeyboardInterrupt as exc:
        if stop is None:
            pool.shutdown(wait=False)
            raise
        stop.set(exc)
        stop.defer()
        for f in futures:
            f.cancel()  # those not started yet
        while not stop.more and not all(f.done() for f in futures):
            concurrent.futures.wait(futures, timeout=0.2)
    pool.shutdown(wait=all(f.done() for f in futures))
    results = []
    for i, t in enumerate(transports):
        if i >= len(futures) or futures[i].cancelled():
            results.append(not_started(t.label, stop))
        elif futures[i].done():
            results.append(futures[i].result())
        else:
            why = "stopped by {} while it ran; what the device did is unknown: `edgetool status`".format(
                stop.name if stop else "a signal"
            )
            results.append({"host": t.label, "ok": False, "stopped": True, "error": why, "seconds": 0.0})
    return results


def not_started(label: str, stop: Optional[Stop]) -> Dict:
    why = "not started: stopped by {}".format(stop.name if stop else "a signal")
    return {"host": label, "ok": False, "skipped": True, "error": why, "seconds": 0.0}
