#!/usr/bin/env python
"""The long fuzz run: the CI fuzz targets (tests/runtime/bundle/fuzz_targets.py) for 200,000+ generated cases.

Targets: the manifest model (edited manifests and raw bytes), the zstd and 7z codecs (mutated
frames and raw bytes), the tar reader (mutated archives, plain and gzip), the image loaders
(mutated PNG, 16-bit PNG and .npy) and the protobuf reader.  Only the project's own error types
may come out; hypothesis stops at the first other exception or wrong result, and this script
then exits non-zero without writing a result.

Runs in rounds (a new seed per round) until --cases or --max-seconds; single-threaded.
``--resume`` continues a stopped run from its last round (the seeds go on where it stopped).
Writes benchmarks/results/fuzz_long.json: cases per target, total, failures, seconds (of
fuzzing, summed over sessions), machine.

Usage: python benchmarks/fuzz_long.py [--cases 200000] [--max-seconds 3600] [--resume]
"""

import argparse
import json
import os
import platform
import sys
import time

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

HERE = os.path.dirname(os.path.abspath(__file__))
from common import RESULTS, load_file  # noqa: E402
from common import write_result  # noqa: E402

# The CI's own fuzz targets, loaded from their file: the long run fuzzes exactly what CI does.
F = load_file(os.path.join(os.path.dirname(HERE), "tests", "runtime", "bundle", "fuzz_targets.py"))

# cases per target per round (the expensive targets get fewer)
ROUND = {
    "manifest": 800,
    "manifest_bytes": 1000,
    "codec": 1000,
    "codec_bytes": 400,
    "tar": 400,
    "image": 600,
    "protobuf": 800,
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return "{} ({} cores visible, 1 thread used), {} {}, Python {}".format(
        cpu, os.cpu_count(), platform.system(), platform.release(), platform.python_version()
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200000)
    ap.add_argument("--max-seconds", type=float, default=3600)
    ap.add_argument("--out", default=os.path.join(RESULTS, "fuzz_long.json"))
    ap.add_argument(
        "--resume",
        action="store_true",
        help="Continue the run in --out: later rounds (new seeds), counts and seconds added.",
    )
    args = ap.parse_args(argv)
    rounds, spent, sessions = 0, 0.0, 1
    if args.resume and os.path.isfile(args.out):
        with open(args.out) as f:
            prev = json.load(f)
        rounds, spent, sessions = prev["rounds"], prev["seconds"], prev.get("sessions", 1) + 1
        F.COUNTS.update(prev["cases_by_target"])
    t0 = time.time() - spent
    while sum(F.COUNTS.values()) < args.cases and time.time() - t0 < args.max_seconds:
        for name, n in ROUND.items():
            F.run(name, n, seed=rounds * 1000 + len(name))
        rounds += 1
        print("round {}: {} cases, {:.0f} s".format(rounds, sum(F.COUNTS.values()), time.time() - t0), flush=True)
    total = sum(F.COUNTS.values())
    write_result(
        args.out,
        {
            "benchmark": "fuzz_long",
            "machine": machine(),
            "threads": 1,
            "rounds": rounds,
            "sessions": sessions,
            "cases_total": total,
            "cases_by_target": dict(sorted(F.COUNTS.items())),
            "failures": 0,
            "seconds": round(time.time() - t0, 1),
            "target_cases": args.cases,
            "reached_target": total >= args.cases,
            "allowed_errors": "BundleError, CodecError, UsageError, FieldError, ManifestError, "
            "ValueError (protobuf reader)",
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
