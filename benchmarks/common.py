"""Shared by the benchmark scripts: where results go and how they are written."""

import json
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_result(path, result):
    """Write one benchmark's JSON result (folders made as needed) and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1, allow_nan=False)
    print("wrote", path)
