"""``edgetool engine build`` / ``engine onnx``: the TensorRT engine of a bundle, on the device.

``build`` builds the engine on the device and saves it in the bundle.  ``onnx`` writes the
exact model ``build`` hands to the TensorRT parser, with the matching ``trtexec`` and
``polygraphy`` command lines, so the engine can be reproduced and cross-checked with
NVIDIA's own tools.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from typing import List, Sequence

import click

from ..errors import UsageError, require
from ..options import device_profile_option, weights_option

log = logging.getLogger(__name__)


@click.group()
def engine():
    """TensorRT engines of a bundle."""


@engine.command("build")
@click.argument("bundle", type=click.Path())
@device_profile_option
@click.option(
    "--max-batch",
    default=None,
    type=int,
    show_default="the device profile's max_batch",
    help="Largest batch of the optimization profile.",
)
@click.option(
    "--refit-individual/--refit-all",
    default=True,
    show_default=True,
    help="TensorRT >= 10: mark only the weights some delta changes (the manifest's refit.changed) as refittable.",
)
@click.option("--strip-weights", is_flag=True, help="Write a weight-stripped plan (TensorRT >= 10).")
@weights_option(
    ["int8", "qdq-float"],
    "How int8 weights enter the engine: int8 codes (TensorRT >= 10) or float weights behind "
    "Q/DQ (TensorRT 8.x); auto picks by version. fp16 profiles always use dequantized weights.",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Check base.onnx against TensorRT's explicit-quantization rules first.",
)
def build(bundle, profile_name, max_batch, refit_individual, strip_weights, form, check):
    """Build an engine for BUNDLE on this device and record it in the manifest."""
    from ..bundle.reader import Bundle
    from ..device_profiles import resolve
    from ..machine import gpu_name
    from .engine_store import add_engine
    from .loader import build_engine, import_trt, trt_version
    from .weight_forms import weight_form

    if os.path.isfile(bundle):  # refused before a build of minutes, not after it
        raise UsageError("{}: engines are saved into a bundle folder; unpack the archive first".format(bundle))
    b = Bundle.open(bundle)
    profile = resolve(profile_name)
    model = b.base_onnx()
    if check:
        _check_qdq(b, model)
    trt = import_trt()
    form = weight_form(trt_version(trt), profile["precision"], form)
    changed = _changed_tensors(b) if refit_individual else None
    batch = max_batch or profile["max_batch"]
    t0 = time.perf_counter()
    plan = build_engine(
        model,
        b.input["name"],
        b.input["shape"],
        profile["precision"],
        profile["workspace_mb"],
        batch,
        refit_only=changed,
        strip_weights=strip_weights,
        form=form,
    )
    individual = changed is not None and trt_version(trt) >= (10, 0)
    entry = add_engine(
        bundle,
        plan,
        {
            "precision": profile["precision"],
            "weights": form,
            "device_profile": profile["name"],
            "tensorrt": trt.__version__,
            "device": gpu_name(),
            "max_batch": batch,
            "refit": "individual" if individual else "all",
            "weight_stripped": bool(strip_weights),
        },
    )
    click.echo(
        "engine: {} ({} bytes, {} with {} weights, TensorRT {}, built in {:.1f} s)".format(
            os.path.join(bundle, entry["file"]),
            entry["size"],
            profile["precision"],
            form,
            trt.__version__,
            time.perf_counter() - t0,
        )
    )


def _changed_tensors(b):
    """The tensors some delta of bundle *b* changes (the manifest's ``refit.changed``, else computed from
    the deltas): the only ones an individual refit marks refittable."""
    from ..bundle.refit_set import refit_set

    names, recorded = refit_set(b)
    log.info(
        "refit set: %d of %d tensors (%s)",
        len(names),
        len(b.layout.tensors),
        "refit.changed" if recorded else "computed from the deltas",
    )
    return [b.layout.by_name[n] for n in names]


def _check_qdq(b, model):
    onnx = require("onnx", "jetson")
    from .qdq_rules import require_valid

    require_valid(onnx.load_from_string(model), b._display("base.onnx"))


def _dims(shape: Sequence[int], sep: str) -> str:
    return sep.join(str(int(d)) for d in shape)


def trtexec_args(
    onnx_path: str,
    input_name: str,
    input_shape: Sequence[int],
    precision: str,
    max_batch: int,
    workspace_mb: int,
    opt_batch: int = 1,
    strip_weights: bool = False,
    strongly_typed: bool = False,
) -> List[str]:
    """The trtexec command that builds the same refittable engine as ``engine build --refit-all``."""
    c, h, w = input_shape
    shapes = {
        k: "{}:{}".format(input_name, _dims((b, c, h, w), "x"))
        for k, b in (("min", 1), ("opt", max(1, min(opt_batch, max_batch))), ("max", max_batch))
    }
    args = [
        "trtexec",
        "--onnx=" + onnx_path,
        "--saveEngine=" + os.path.splitext(onnx_path)[0] + ".plan",
        "--minShapes=" + shapes["min"],
        "--optShapes=" + shapes["opt"],
        "--maxShapes=" + shapes["max"],
        "--memPoolSize=workspace:{}".format(int(workspace_mb)),
    ]
    args += _precision_args(precision, strongly_typed, "--stronglyTyped") + ["--refit"]
    if strip_weights:
        args.append("--stripWeights")
    return args


def _precision_args(precision: str, strongly_typed: bool, typed_flag: str) -> List[str]:
    if strongly_typed:
        return [typed_flag]
    return ["--int8", "--fp16"] if precision == "int8" else ["--fp16"]


def polygraphy_args(
    onnx_path: str,
    input_name: str,
    input_shape: Sequence[int],
    precision: str,
    max_batch: int,
    strongly_typed: bool = False,
) -> List[str]:
    """polygraphy: run the model in TensorRT and ONNX Runtime and compare the outputs."""
    c, h, w = input_shape
    one = "{}:[{}]".format(input_name, _dims((1, c, h, w), ","))
    args = ["polygraphy", "run", onnx_path, "--onnxrt", "--trt"]
    args += _precision_args(precision, strongly_typed, "--strongly-typed")
    args += [
        "--input-shapes",
        one,
        "--trt-min-shapes",
        one,
        "--trt-opt-shapes",
        one,
        "--trt-max-shapes",
        "{}:[{}]".format(input_name, _dims((max_batch, c, h, w), ",")),
    ]
    return args


@engine.command("onnx")
@click.argument("bundle", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=False))
@device_profile_option
@weights_option(
    ["int8", "qdq-float", "fp16"], "Weight form; auto: the one engine build uses with this machine's TensorRT."
)
def onnx_cmd(bundle, out, profile_name, form):
    """Write the model engine build gives TensorRT, and the trtexec/polygraphy commands for it."""
    from ..bundle.reader import Bundle
    from ..device_profiles import resolve
    from ..files import check_output
    from .weight_forms import engine_model, weight_form

    check_output(out, "engine onnx: OUT")
    if os.path.isfile(bundle):  # refused before a build of minutes, not after it
        raise UsageError("{}: engines are saved into a bundle folder; unpack the archive first".format(bundle))
    b = Bundle.open(bundle)
    profile = resolve(profile_name)
    precision = "fp16" if form == "fp16" else profile["precision"]
    if precision == "fp16":
        if form not in ("auto", "fp16"):
            raise UsageError("profile {} builds fp16 engines: use --weights fp16 (or auto)".format(profile["name"]))
        form = "fp16"
    elif form == "auto":
        try:
            import tensorrt as trt
        except ImportError:
            raise UsageError(
                "TensorRT is not installed here, so --weights auto cannot tell the form: choose "
                "--weights int8 (TensorRT >= 10), qdq-float (TensorRT 8.5/8.6) or fp16"
            ) from None
        from .loader import trt_version

        form = weight_form(trt_version(trt), precision)
    model = engine_model(b.base_onnx(), form)
    with open(out, "wb") as f:
        f.write(model)
    click.echo(
        "wrote {} ({} bytes, {} weights, input {} {})".format(
            out, len(model), form, b.input["name"], ["N"] + list(b.input["shape"])
        )
    )
    _echo_commands(out, b.input, profile, precision, _strongly_typed_here(precision, form))


def _strongly_typed_here(precision: str, form: str) -> bool:
    """Whether engine build makes the network strongly typed: this TensorRT tells; without one, the form does
    (int8 weights need TensorRT >= 10, which builds int8 engines strongly typed; qdq-float is 8.x's form)."""
    if precision != "int8":
        return False
    try:
        import tensorrt as trt
    except ImportError:
        return form == "int8"
    from .loader import strongly_typed

    return strongly_typed(trt, precision)


def _echo_commands(out: str, model_input, profile, precision: str, typed: bool) -> None:
    name, shape, batch = model_input["name"], model_input["shape"], profile["max_batch"]
    trtexec = trtexec_args(out, name, shape, precision, batch, profile["workspace_mb"], strongly_typed=typed)
    click.echo("trtexec:    " + " ".join(shlex.quote(a) for a in trtexec))
    polygraphy = polygraphy_args(out, name, shape, precision, batch, strongly_typed=typed)
    click.echo("polygraphy: " + " ".join(shlex.quote(a) for a in polygraphy))
