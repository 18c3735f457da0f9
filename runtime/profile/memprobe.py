"""Resident memory of one deployment form, measured in a fresh process.

``python -m edgetool.runtime.profile.memprobe FORM BUNDLE [--threads T]`` prints one JSON
object: the process's resident set after opening the bundle (the baseline), after building
FORM and running every network it holds, and the peak.  FORM is ``single`` (base network,
one session), ``efficient`` (one session, every delta switched in once) or ``vanilla``
(N+1 sessions).  A fresh process per form keeps one form's freed memory from hiding in
another's figure.  Before each reading, freed heap memory is handed back to the system
(glibc ``malloc_trim``, where present), so the figure counts live memory for every form
alike, not the allocator's slack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict

from ..errors import BackendError
from .system import proc_status

FORMS = ("single", "efficient", "vanilla")


def settled() -> Dict[str, int]:
    """proc_status() after garbage collection and glibc's malloc_trim (where present)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return proc_status()


def _probe(form: str, bundle_path: str, threads: int) -> Dict[str, Any]:
    import onnxruntime  # noqa: F401  (imported before the baseline, like numpy)

    from ..backends.base import BASE
    from ..backends.ort import OrtBackend
    from ..bundle.reader import Bundle
    from .vanilla import PlainSessions

    bundle = Bundle.open(bundle_path)
    x = bundle.samples()
    if x is None:
        x = __import__("numpy").zeros([1] + list(bundle.input["shape"]), dtype="float32")
    x = x[:1]
    bundle.base_onnx()
    before = settled()
    n = bundle.num_superclasses
    if form == "efficient":
        be = OrtBackend(bundle, threads=threads)
        for k in list(range(n)) + [BASE]:
            be.switch(k)
            be.infer(x)
        weights = sum(v for k, v in be.memory().items() if k.endswith("_bytes") and k != "process_rss_bytes")
    else:
        targets = [BASE] if form == "single" else [BASE] + list(range(n))
        sessions = PlainSessions(bundle, targets, threads=threads)
        for k in targets:
            sessions.infer(k, x)
        weights = sessions.weight_bytes()
    after = settled()
    return {
        "form": form,
        "baseline_rss_bytes": before.get("VmRSS", 0),
        "rss_bytes": after.get("VmRSS", 0),
        "peak_rss_bytes": after.get("VmHWM", 0),
        "resident_bytes": after.get("VmRSS", 0) - before.get("VmRSS", 0),
        "weight_buffer_bytes": int(weights),
    }


def measure(form: str, bundle_path: str, threads: int = 0, timeout: float = 600.0) -> Dict[str, Any]:
    """Run the probe for *form* in a fresh Python process and return its figures."""
    cmd = [
        sys.executable,
        "-m",
        "edgetool.runtime.profile.memprobe",
        form,
        os.fspath(bundle_path),
        "--threads",
        str(int(threads)),
    ]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BackendError("memory probe '{}' took longer than {:.0f} s".format(form, timeout)) from None
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackendError("memory probe '{}' failed: {}".format(form, tail))
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="edgetool.runtime.profile.memprobe")
    ap.add_argument("form", choices=FORMS)
    ap.add_argument("bundle")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    print(json.dumps(_probe(args.form, args.bundle, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
