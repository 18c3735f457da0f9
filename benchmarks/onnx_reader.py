"""The device's base.onnx reader: the onnx package against edgetool's protobuf wire reader.

On the device the runtime reads the refittable initializers of base.onnx (int8 codes, float
scales and biases) once at start-up, and hands TensorRT the model without its refit graph
inputs.  This script measures, for real exported models of each architecture, in fresh
processes: the import cost, the time to read every refit tensor, the time to strip the refit
inputs, and the disk footprint of the packages each way needs.  Both ways must give the same
arrays and the same stripped model.

    python benchmarks/onnx_reader.py [--archs resnet8,resnet18] [--repeats 5] [--out FILE]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from common import RESULTS, write_result  # noqa: E402

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
if sys.argv[1] == "onnx":
    import onnx
    from onnx import numpy_helper
else:
    from edgetool.runtime.bundle.onnx_weights import read_initializers, strip_initializer_inputs
t1 = time.perf_counter()
data = open(sys.argv[2], "rb").read()
names = json.load(open(sys.argv[3]))
t2 = time.perf_counter()
if sys.argv[1] == "onnx":
    m = onnx.load_from_string(data)
    arrays = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer if t.name in names}
else:
    arrays = read_initializers(data, names)
t3 = time.perf_counter()
if sys.argv[1] == "onnx":
    inits = {t.name for t in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    stripped = m.SerializeToString()
else:
    stripped = strip_initializer_inputs(data)
t4 = time.perf_counter()
import hashlib
digest = hashlib.sha256(b"".join(arrays[n].tobytes() for n in names)).hexdigest()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "read_ms": (t3 - t2) * 1e3, "strip_ms": (t4 - t3) * 1e3,
                  "total_ms": (t4 - t0) * 1e3, "arrays_sha256": digest, "n": len(arrays),
                  "stripped_sha256": hashlib.sha256(stripped).hexdigest()}))
"""


def export_model(arch, path):
    """A real base.onnx: the exporter's Q/DQ model of an (untrained) QAT network of *arch*."""
    import torch

    from edgetool.export.onnx_export import from_qatnet
    from edgetool.toolchain.train import models, qat

    torch.manual_seed(0)
    net = qat.from_float(models.build(arch, 3, 10).eval(), [torch.randn(8, 3, 32, 32)])
    model = from_qatnet(net, [3, 32, 32], 10, refit_inputs=True)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return [t.name for t in model.graph.initializer if t.name.endswith((".weight", ".scale", ".bias"))]


def package_bytes(*modules):
    total = 0
    for name in modules:
        mod = __import__(name, fromlist=["_"])
        root = os.path.dirname(mod.__file__)
        for d, _, files in os.walk(root):
            total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return total


def measure(way, model, names_file, repeats):
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, way, model, names_file], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout))
    keys = ("import_ms", "read_ms", "strip_ms", "total_ms")
    summary = {k: statistics.median(r[k] for r in runs) for k in keys}
    summary.update(arrays_sha256=runs[0]["arrays_sha256"], tensors=runs[0]["n"], repeats=repeats)
    return summary, runs[0]["stripped_sha256"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="resnet8,resnet18")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(RESULTS, "onnx_reader.json"))
    args = ap.parse_args()
    from edgetool.runtime.machine import machine_name

    result = {
        "benchmark": "onnx_reader",
        "machine": machine_name(),
        "python": sys.version.split()[0],
        "packages_bytes": {
            "onnx+protobuf": package_bytes("onnx", "google.protobuf"),
            "edgetool.runtime.bundle.onnx_weights": os.path.getsize(
                __import__("edgetool.runtime.bundle.onnx_weights", fromlist=["_"]).__file__
            ),
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            path = os.path.join(tmp, arch + ".onnx")
            names = export_model(arch, path)
            names_file = os.path.join(tmp, arch + ".json")
            with open(names_file, "w") as f:
                json.dump(names, f)
            onnx_res, onnx_strip = measure("onnx", path, names_file, args.repeats)
            own_res, own_strip = measure("own", path, names_file, args.repeats)
            if onnx_res["arrays_sha256"] != own_res["arrays_sha256"]:
                sys.exit("error: the two readers disagree on the refit tensors of " + arch)
            result["models"][arch] = {
                "model_bytes": os.path.getsize(path),
                "onnx": onnx_res,
                "wire_reader": own_res,
                "same_arrays": True,
                "same_stripped_model": onnx_strip == own_strip,
            }
            print(arch, json.dumps(result["models"][arch]))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
