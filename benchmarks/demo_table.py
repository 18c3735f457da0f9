#!/usr/bin/env python
"""Reproduce the README's demo table: `edgetool demo` on the shipped sample, results to JSON.

Usage: python benchmarks/demo_table.py [--out edgetool-out]   (resumes a finished run)
"""

import argparse
import os

HERE = os.path.dirname(os.path.abspath(__file__))
from common import write_result  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="edgetool-out")
    ap.add_argument("--result", default=os.path.join(HERE, "results", "demo_fashion_mnist_sample.json"))
    args = ap.parse_args()
    from edgetool.toolchain.demo import demo_config, run_demo
    from edgetool.toolchain.train.run import TrainConfig

    results = run_demo(args.out, demo_config(TrainConfig()))
    write_result(args.result, results)


if __name__ == "__main__":
    main()
