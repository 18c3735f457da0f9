#!/usr/bin/env python
"""The README's performance section, from one run: ``python benchmarks/performance.py``.

1. ``edgetool profile`` on the demo bundle (ONNX Runtime on this CPU): switch against a cold
   model load, 7z against zstd decode, resident memory of efficient against vanilla and the
   single network, two-stage throughput against the single network.  The HTML report is
   rendered in headless Chromium and its screenshot kept.
2. Scaling: bundles of ResNet-8, ResNet-18 and ResNet-50 (random weights, through the
   toolchain's export path; ``scaling_bundles.py``) with 10%, 50% and 100% of int8 codes
   changed per delta, each profiled: switch time, its largest stage, resident memory.

Writes benchmarks/results/performance.json and profile_demo/, and rewrites the README
between its ``performance`` markers.  ``--table-only`` re-renders the README from the JSON.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
from common import write_result  # noqa: E402
from common import tables as perf_table  # noqa: E402

README = os.path.join(os.path.dirname(HERE), "README.md")
OUT = os.path.join(HERE, "results", "performance.json")
DEMO_DIR = os.path.join(HERE, "results", "profile_demo")
DENSITIES = (10, 50, 100)


def progress(step: str) -> None:
    print("  ..", step, flush=True)


def demo_profile(bundle: str, iterations: int) -> dict:
    from common.browser import render

    from edgetool.runtime.profile.profile import run_profile
    from edgetool.runtime.profile.report import write_reports

    report = run_profile(bundle, iterations=iterations, warmup=3, batch=8, threads=1, step=progress)
    paths = write_reports(report, DEMO_DIR)
    try:
        shot = render(paths["html"], os.path.join(DEMO_DIR, "profile_html.png"))
        report["html_check"] = dict(shot, screenshot="profile_demo/profile_html.png")
    except RuntimeError as exc:
        report["html_check"] = {"skipped": str(exc)}
    return report


def scaling_row(name: str, pct: int, work: str, iterations: int) -> dict:
    from common import bundles as scaling_bundles

    from edgetool.runtime.profile.profile import run_profile
    from edgetool.runtime.bundle.sparse_codec import DENSE_ABOVE

    path = scaling_bundles.build(os.path.join(work, "{}-{}".format(name, pct)), name, pct / 100)
    r = run_profile(
        path,
        iterations=iterations,
        warmup=3,
        batch=4,
        threads=1,
        modes=("one-engine",),
        policies=("per-image",),
        codecs=("zstd", "sparse"),
        step=progress,
    )
    row = perf_table.scaling_summary(name, pct, r)
    if pct / 100 > DENSE_ABOVE:  # the sparse codec stores these as one zstd frame: the zstd figures hold
        row["sparse"] = dict(
            perf_table.switch_summary(r["stages"], "zstd"),
            dense=True,
            stored_bytes_mean=r["bundle"]["delta_bytes_mean"],
        )
        return row
    progress("the same networks with sparse deltas")
    sparse = scaling_bundles.transcode(path, path + "-sparse", "sparse")
    row["sparse"] = perf_table.switch_summary(switch_only(sparse, iterations), "sparse")
    return row


def switch_only(path: str, iterations: int) -> dict:
    """Switch stages of one bundle (ONNX Runtime, one thread)."""
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.profile import stages
    from edgetool.runtime.profile.engines import open_backend

    with Bundle.open(path) as b:
        be = open_backend("onnxruntime", b, "one-engine", threads=1)
        try:
            out = stages.switch_stages(b, be, iterations, 3)
        finally:
            be.close()
        out["stored_bytes_mean"] = b.stored_bytes()["deltas"] / b.num_superclasses
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="edgetool-out/bundle", help="demo bundle (trained by `edgetool demo`)")
    ap.add_argument("--work", default="edgetool-out/scaling", help="where the scaling bundles are built")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--archs", default="resnet8,resnet18,resnet50")
    ap.add_argument("--table-only", action="store_true", help="re-render the README from performance.json")
    args = ap.parse_args(argv)
    if not args.table_only:
        if not os.path.isfile(os.path.join(args.bundle, "manifest.json")):
            sys.exit("error: {} is not a bundle; run `edgetool demo` first".format(args.bundle))
        from edgetool.runtime.profile.system import machine

        print("profiling the demo bundle", flush=True)
        result = {
            "benchmark": "performance",
            "machine": machine(),
            "load_average_at_start": _load(),
            "demo": demo_profile(args.bundle, args.iterations),
            "scaling": [],
        }
        for name in args.archs.split(","):
            for pct in DENSITIES:
                print("scaling: {} with {}% of codes changed".format(name, pct), flush=True)
                result["scaling"].append(scaling_row(name, pct, args.work, max(5, args.iterations // 3)))
                write_result(OUT, dict(result, complete=False))  # what has run so far survives an interruption
        result.update(complete=True, load_average_at_end=_load())
        write_result(OUT, result)
    else:
        import json

        with open(OUT) as f:
            result = json.load(f)
    update_readme(perf_table.markdown(result))
    return 0


def _load():
    """1, 5 and 15 minute load averages: how busy the machine was besides this run."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def update_readme(table: str) -> None:
    with open(README) as f:
        text = f.read()
    pattern = re.compile(r"(<!-- performance:begin -->\n).*?(<!-- performance:end -->)", re.S)
    if not pattern.search(text):
        sys.exit("error: README.md has no <!-- performance:begin --> / <!-- performance:end --> markers")
    text = pattern.sub(lambda m: m.group(1) + table + m.group(2), text)
    tmp = README + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, README)
    print("updated", README)


if __name__ == "__main__":
    sys.exit(main())
