"""A staged rollout over many devices: canaries first, then waves, stopping after too many
failures; and the per-host report of what each device got."""

from __future__ import annotations

import json


def rollout(targets, one, canary: int, max_failures, jobs: int):
    """Canaries first (with their doctor check); then the rest in waves of *jobs*, stopping once
    more than *max_failures* hosts failed.  Hosts never started are reported as skipped."""
    from .driver import on_all

    results = on_all(targets[:canary], lambda t: one(t, True), jobs) if canary else []
    rest = targets[canary:]
    why = None
    if any(not r["ok"] for r in results):
        why = "skipped: a canary failed"
    for i in range(0, len(rest), jobs):
        failed = sum(not r["ok"] for r in results)
        if why is None and max_failures is not None and failed > max_failures:
            why = "skipped: {} hosts failed, more than --max-failures {}".format(failed, max_failures)
        wave = rest[i : i + jobs]
        if why is not None:
            results += [{"host": t.label, "ok": False, "skipped": True, "error": why, "seconds": 0.0} for t in wave]
            continue
        results += on_all(wave, one, jobs)
    return results


def write_report(path, results, source):
    """One JSON record per host: what it got, when, and its doctor check."""
    import time

    with open(path, "w") as f:
        for r in results:
            rec = {
                "host": r["host"],
                "version": source.version,
                "release": source.release,
                "result": "ok" if r["ok"] else ("skipped" if r.get("skipped") else "failed"),
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(r.get("seconds", 0.0), 3),
                "doctor": r.get("doctor"),
                "error": r.get("error"),
            }
            f.write(json.dumps(rec, sort_keys=True) + "\n")
