#!/usr/bin/env python
"""Reproduce the README's demo table: `edgetool demo` on the shipped sample, results to JSON.

Usage: python benchmarks/demo_table.py [--out edgetool-out]   (resumes a finished run)
       python benchmarks/demo_table.py --results edgetool-out/results.json
           (a finished `edgetool demo`'s own results, as that run measured them: its wall time included)
"""

import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
from common import write_result  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="edgetool-out")
    ap.add_argument("--results", default=None, help="a finished `edgetool demo`'s results.json, written as the result")
    ap.add_argument("--result", default=os.path.join(HERE, "results", "demo_fashion_mnist_sample.json"))
    args = ap.parse_args()
    if args.results:
        try:
            with open(args.results) as f:
                results = json.load(
                    f, parse_constant=lambda c: ap.error("{}: {} is not strict JSON".format(args.results, c))
                )
        except (OSError, ValueError) as exc:
            ap.error("{}: {}".format(args.results, exc))
        if (
            not isinstance(results, dict)
            or results.get("dataset") != "fashion-mnist sample"
            or "accuracy" not in results
        ):
            ap.error("{}: not the results.json of `edgetool demo` on the shipped sample".format(args.results))
        write_result(args.result, results)
        return
    from edgetool.toolchain.demo import demo_config, run_demo
    from edgetool.toolchain.train.run import TrainConfig

    results = run_demo(args.out, demo_config(TrainConfig()))
    write_result(args.result, results)


if __name__ == "__main__":
    main()
