"""``edgetool engine build``: build the TensorRT engine on the device and save it in the bundle."""
from __future__ import annotations

import os
import time

import click


@click.group()
def engine():
    """TensorRT engines of a bundle."""


@engine.command("build")
@click.argument("bundle", type=click.Path())
@click.option("--device-profile", "profile_name", default=None,
              help="Device profile name or JSON file (default: detected Jetson, else desktop-gpu).")
@click.option("--max-batch", default=None, type=int, help="Largest batch of the optimization profile.")
@click.option("--refit-individual/--refit-all", default=True, show_default=True,
              help="TensorRT >= 10: mark only the weights some delta changes as refittable.")
@click.option("--strip-weights", is_flag=True, help="Write a weight-stripped plan (TensorRT >= 10).")
@click.option("--weights", "form", type=click.Choice(["auto", "int8", "qdq-float"]), default="auto", show_default=True,
              help="How int8 weights enter the engine: int8 codes (TensorRT >= 10) or float weights behind "
                   "Q/DQ (TensorRT 8.x); auto picks by version. fp16 profiles always use dequantized weights.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Check base.onnx against TensorRT's explicit-quantization rules first.")
def build(bundle, profile_name, max_batch, refit_individual, strip_weights, form, check):
    """Build an engine for BUNDLE on this device and record it in the manifest."""
    from edgetool import device_profiles
    from edgetool.runtime.backends.trt import build_engine, gpu_name, trt_version
    from edgetool.runtime.bundle import Bundle
    from edgetool.runtime.engine_weights import weight_form
    from edgetool.runtime.errors import require

    b = Bundle.open(bundle)
    profile = device_profiles.load(profile_name or device_profiles.detect() or "desktop-gpu")
    model = b.base_onnx()
    if check:
        onnx = require("onnx", "jetson")
        from .trt_rules import require_valid

        require_valid(onnx.load_from_string(model), b._display("base.onnx"))
    trt = require("tensorrt", "jetson")
    form = weight_form(trt_version(trt), profile["precision"], form)
    changed = None
    if refit_individual:
        names = b.layout.changed_tensors(b.read_delta(k) for k in range(b.num_superclasses))
        changed = [b.layout.by_name[n] for n in names]
    batch = max_batch or profile["max_batch"]
    t0 = time.perf_counter()
    plan = build_engine(model, b.input["name"], b.input["shape"], profile["precision"], profile["workspace_mb"],
                        batch, refit_only=changed, strip_weights=strip_weights, form=form)
    from .bundle import add_engine

    entry = add_engine(bundle, plan, {"precision": profile["precision"], "weights": form,
                                      "device_profile": profile["name"],
                                      "tensorrt": trt.__version__, "device": gpu_name(), "max_batch": batch,
                                      "refit": "individual" if changed is not None and trt_version(trt) >= (10, 0) else "all",
                                      "weight_stripped": bool(strip_weights)})
    click.echo("engine: {} ({} bytes, {} with {} weights, TensorRT {}, built in {:.1f} s)".format(
        os.path.join(bundle, entry["file"]), entry["size"], profile["precision"], form, trt.__version__,
        time.perf_counter() - t0))

