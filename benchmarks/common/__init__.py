"""Shared by the benchmark scripts: where results go and how they are written, mean and standard
error; the data, runs, routing, bundle, table and browser helpers are the submodules."""

import importlib.util
import json
import math
import os
import platform

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


def write_result(path, result):
    """Write one benchmark's JSON result (folders made as needed) and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1, allow_nan=False)
    print("wrote", path)


def mean_se(values):
    """{"mean", "se", "n"}: the standard error is the sample standard deviation / sqrt(n) (null for n < 2)."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return {"mean": None, "se": None, "n": 0}
    se = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(np.mean(v)), "se": se, "n": len(v)}


def load_file(path):
    """The Python file at *path* as a module (by its path, not through sys.path)."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> str:
    """The CPU model, its core count and the OS: the machine a result names."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return "{}, {} cores, {}".format(cpu, os.cpu_count(), platform.system())
