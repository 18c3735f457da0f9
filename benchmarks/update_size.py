#!/usr/bin/env python
"""An update of a deployed network against a full bundle: bytes over the wire for the Caltech-101 tail
fine-tune, the device's apply time, and the accuracy of the update against the deployed network.

The deployed network is a finished EfficientNet-Lite0 transfer run (--run; its config.json,
data.json, metrics.json and int8.pt are copied into the work folder, and its trunk cache (--cache)
too, so nothing of it changes).  The retrain is ``edgetool train UPDATE --update-of DEPLOYED
--val-fraction 0.05``: the tail's QAT continues from the deployed int8 weights for --qat-epochs at
the run's QAT learning rate, on more images (95% of the training split instead of 85%; the other 5%
pick the epoch), scales frozen, under the run's delta budget.  Then: the full bundle of the
deployed network (release 1) and of the new one (release 2), the update (release 2), all signed;
the full bundle and then the update deployed to a local deploy root (the device side of deploy,
the same code as over SSH; its --report gives the device's apply time); the installed base.onnx is
compared with the full bundle's byte for byte, and ``classify --eval`` runs both networks on the
test split through ONNX Runtime (the update as the device rebuilt it).

Bytes over the wire are the files deploy sends: every file of the folder for a full bundle, the
update's manifest, signature, base delta and the files whose bytes changed for an update.

Usage: python benchmarks/update_size.py [--run DIR --cache DIR]  ->  benchmarks/results/update_caltech101.json
"""

import argparse
import json
import os
import resource
import shutil
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from common import RESULTS, write_result  # noqa: E402
from common.pretrained import cli  # noqa: E402

MAIN = os.path.join(os.path.dirname(ROOT), "main", "edgetool-out", "pretrained-caltech101")
WORK = os.path.join(ROOT, "edgetool-out", "update-caltech101")


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def copy_run(run, cache):
    """The deployed run and its trunk cache, copied into the work folder (the originals stay as they are)."""
    deployed, cache_copy = os.path.join(WORK, "deployed"), os.path.join(WORK, "cache")
    if not os.path.isfile(os.path.join(deployed, "int8.pt")):
        os.makedirs(deployed, exist_ok=True)
        for f in ("config.json", "data.json", "metrics.json", "int8.pt"):
            shutil.copy2(os.path.join(run, f), os.path.join(deployed, f))
    if not os.path.isdir(cache_copy):
        shutil.copytree(cache, cache_copy)
    return deployed, cache_copy


def retrain(deployed, cache, qat_epochs):
    update = os.path.join(WORK, "update-run")
    cpu0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    cli("train", update, "--update-of", deployed, "--val-fraction", 0.05, "--qat-epochs", qat_epochs, "--cache", cache)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = {
        "wall": time.perf_counter() - t0,
        "cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
    }
    return update, seconds


def bundles(deployed, update, key):
    out = {n: os.path.join(WORK, n) for n in ("full1", "full2", "update")}
    cli("export", deployed, "--out", out["full1"], "--release", 1, "--sign", key, "--force")
    cli("export", update, "--out", out["full2"], "--release", 2, "--sign", key, "--force")
    text = cli("export", update, "--update-of", out["full1"], "--out", out["update"], "--release", 2, "--sign", key,
               "--force", capture=True)  # fmt: skip
    print(text)
    return out, text


def deploy(out, key):
    root, report = os.path.join(WORK, "device"), os.path.join(WORK, "report.jsonl")
    shutil.rmtree(root, ignore_errors=True)
    cli("target", "trust", root, key[:-4] + ".pub")
    cli("deploy", out["full1"], "--to", root, "--device-profile", "cpu", "--batch", 1)
    t0 = time.perf_counter()
    cli("deploy", out["update"], "--to", root, "--device-profile", "cpu", "--report", report)
    wall = time.perf_counter() - t0
    with open(report) as f:
        rec = json.loads(f.read())
    current = os.path.join(root, "current")
    with open(os.path.join(current, "base.onnx"), "rb") as f, open(os.path.join(out["full2"], "base.onnx"), "rb") as g:
        same = f.read() == g.read()
    return current, rec["update"], wall, same


def evaluate(bundle, test):
    ev = json.loads(cli("classify", bundle, test, "--eval", "--json", capture=True))
    return {"accuracy": ev["accuracy"], "images": ev.get("images")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=os.path.join(MAIN, "s224-seed0"), help="the deployed transfer run (copied)")
    ap.add_argument("--cache", default=os.path.join(MAIN, "cache"), help="its trunk cache (copied)")
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--no-eval", action="store_true", help="skip classify --eval on the test split")
    a = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    deployed, cache = copy_run(a.run, a.cache)
    key = os.path.join(WORK, "release.key")
    if not os.path.isfile(key):
        cli("keygen", key[:-4])
    update_run, train_seconds = retrain(deployed, cache, a.qat_epochs)
    out, export_text = bundles(deployed, update_run, key)
    current, applied, deploy_wall, same = deploy(out, key)
    with open(os.path.join(out["update"], "manifest.json")) as f:
        u = json.load(f)
    with open(os.path.join(update_run, "metrics.json")) as f:
        qat = json.load(f)["qat"]
    layout = json.load(open(os.path.join(out["full2"], "manifest.json")))["refit"]
    changed = set(u["base_delta"]["changed"])
    int8 = [t for t in layout["tensors"] if t["dtype"] == "int8"]
    full_bytes, update_bytes = folder_bytes(out["full2"]), folder_bytes(out["update"])
    test = os.path.join(json.load(open(os.path.join(deployed, "config.json")))["data"], "test")
    from edgetool.runtime.machine import machine_name

    result = {
        "machine": machine_name(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "deployed_run": a.run,
        "retrain": "train --update-of DEPLOYED --val-fraction 0.05 --qat-epochs {}".format(a.qat_epochs),
        "bytes_over_the_wire": {
            "full_bundle": full_bytes,
            "update": update_bytes,
            "ratio": update_bytes / full_bytes,
            "update_files": {
                "manifest.json": os.path.getsize(os.path.join(out["update"], "manifest.json")),
                "manifest.sig": os.path.getsize(os.path.join(out["update"], "manifest.sig")),
                u["base_delta"]["file"]: u["base_delta"]["size"],
                **{e["file"]: e["size"] for e in u["files"]},
            },
            "reused_on_the_device": u["reused"],
        },
        "base_delta": {
            "codec": u["base_delta"]["codec"],
            "tensors_changed": len(changed),
            "tensors": len(layout["tensors"]),
            "int8_codes_changed": u["base_delta"]["changed_int8"],
            "int8_codes_in_changed_tensors": sum(t["nbytes"] for t in int8 if t["name"] in changed),
            "int8_codes_in_network": sum(t["nbytes"] for t in int8),
        },
        "device": {
            "apply_seconds": applied["apply_seconds"],
            "deploy_command_seconds": deploy_wall,
            "engine": "none on the CPU path: nothing is built; a stored TensorRT engine is refitted (unverified here)",
            "base_onnx_equals_full_bundle": same,
        },
        "retrain_seconds": dict(train_seconds, trunk_passes=qat.get("cache_seconds")),
        "deployed_train_seconds": json.load(open(os.path.join(deployed, "metrics.json"))).get("timing"),
        "qat_fake_quant_test_accuracy": qat.get("test_accuracy"),
        "export_output": export_text.strip().splitlines(),
    }
    if not a.no_eval:
        result["int8_runtime_test"] = {"deployed": evaluate(out["full1"], test), "update": evaluate(current, test)}
    write_result(os.path.join(RESULTS, "update_caltech101.json"), result)


if __name__ == "__main__":
    main()
