"""A staged rollout over many devices: canaries first, then waves, stopping after too many
failures; and the per-host report of what each device got."""

from __future__ import annotations

import json


def rollout(targets, one, canary: int, max_failures, jobs: int, stop=None):
    """Canaries first (with their doctor check); then the rest in waves of *jobs*, stopping once
    more than *max_failures* hosts failed.  Hosts never started are reported as skipped.  A signal
    sets *stop* (:class:`.parallel.Stop`): no host starts after it, and every host has its result."""
    from .parallel import Stop, not_started, on_all

    stop = stop or Stop()
    results = []
    try:
        if canary:
            results += on_all(targets[:canary], lambda t: one(t, True), jobs, stop)
        rest = targets[canary:]
        why = None
        if any(not r["ok"] for r in results):
            why = "skipped: a canary failed"
        for i in range(0, len(rest), jobs):
            failed = sum(not r["ok"] for r in results)
            if why is None and max_failures is not None and failed > max_failures:
                why = "skipped: {} hosts failed, more than --max-failures {}".format(failed, max_failures)
            wave = rest[i : i + jobs]
            if stop.is_set():
                results += [not_started(t.label, stop) for t in wave]
            elif why is not None:
                results += [{"host": t.label, "ok": False, "skipped": True, "error": why, "seconds": 0.0} for t in wave]
            else:
                results += on_all(wave, one, jobs, stop)
    except KeyboardInterrupt as exc:  # between two waves: what is done stays reported
        stop.set(exc)
        stop.defer()
        done = {r["host"] for r in results}
        results += [not_started(t.label, stop) for t in targets if t.label not in done]
    return results


def report_text(results, source) -> str:
    """One JSON record per host: what it got, when, and its doctor check."""
    import time

    lines = []
    for r in results:
        result = "ok" if r["ok"] else ("skipped" if r.get("skipped") else "stopped" if r.get("stopped") else "failed")
        rec = {
            "host": r["host"],
            "version": source.version,
            "release": source.release,
            "result": result,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(r.get("seconds", 0.0), 3),
            "doctor": r.get("doctor"),
            "error": r.get("error"),
            "update": r.get("update"),  # an update bundle: the version it was applied to, what was reused
        }
        lines.append(json.dumps(rec, sort_keys=True) + "\n")
    return "".join(lines)


def write_report(path, results, source):
    """The report, written atomically: the old file or the whole new one, never a part."""
    from ..files import write_bytes_atomic

    write_bytes_atomic(path, report_text(results, source).encode("utf-8"))
