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

import click

from ..errors import UsageError, require
from ..options import device_profile_option, weights_option
from .commands import dla_batch, polygraphy_args, profile_tensorrt, resolve_dla_core, trtexec_args

dla_option = click.option(
    "--dla-core",
    "dla",
    default=None,
    show_default="GPU only",
    metavar="N|auto",
    help="Run the layers a DLA can run on DLA core N of the device profile's (auto: core 0), the others on the "
    "GPU. A DLA engine has one batch size: --max-batch, default 1.",
)

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
    help="Largest batch of the optimization profile (with --dla-core: the engine's one batch, default 1).",
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
@dla_option
def build(bundle, profile_name, max_batch, refit_individual, strip_weights, form, check, dla):
    """Build an engine for BUNDLE on this device and record it in the manifest."""
    from ..bundle.reader import Bundle
    from ..device_profiles import resolve
    from .engine_store import add_engine
    from .loader import build_engine, import_trt, strongly_typed, trt_version
    from .weight_forms import weight_form

    if os.path.isfile(bundle):  # refused before a build of minutes, not after it
        raise UsageError("{}: engines are saved into a bundle folder; unpack the archive first".format(bundle))
    profile = resolve(profile_name)
    core = resolve_dla_core(dla, profile)
    b = Bundle.open(bundle)
    model = b.base_onnx()
    if check:
        _check_qdq(b, model)
    trt = import_trt()
    precision = profile["precision"]
    form = weight_form(trt_version(trt), precision, form)
    changed = _changed_tensors(b) if refit_individual else None
    batch = dla_batch(max_batch, profile, core)
    args = ("engine.onnx", b.input["name"], b.input["shape"], precision, batch, profile["workspace_mb"])
    typed = strongly_typed(trt, precision)
    trtexec = trtexec_args(
        *args, strip_weights=strip_weights, strongly_typed=typed, dla_core=core, tensorrt=trt_version(trt)
    )
    log.info("the same build with trtexec, on the model of edgetool engine onnx: %s", shlex.join(trtexec))
    t0 = time.perf_counter()
    plan = build_engine(
        model,
        b.input["name"],
        b.input["shape"],
        precision,
        profile["workspace_mb"],
        batch,
        refit_only=changed,
        strip_weights=strip_weights,
        form=form,
        dla_core=core,
    )
    individual = bool(changed) and trt_version(trt) >= (10, 0)
    entry = add_engine(bundle, plan, _engine_meta(trt, profile, form, batch, individual, strip_weights, core))
    click.echo(
        "engine: {} ({} bytes, {} with {} weights{}, TensorRT {}, built in {:.1f} s)".format(
            os.path.join(bundle, entry["file"]),
            entry["size"],
            precision,
            form,
            "" if core is None else ", DLA core {} with GPU fallback, batch {}".format(core, batch),
            trt.__version__,
            time.perf_counter() - t0,
        )
    )


def _engine_meta(trt, profile, form, batch, individual, strip_weights, core) -> dict:
    """The engine's manifest entry, besides its file, size and sha256."""
    from ..machine import gpu_name

    meta = {
        "precision": profile["precision"],
        "weights": form,
        "device_profile": profile["name"],
        "tensorrt": trt.__version__,
        "device": gpu_name(),
        "max_batch": batch,
        "refit": "individual" if individual else "all",
        "weight_stripped": bool(strip_weights),
    }
    if core is not None:  # the DLA takes one batch size: the runner pads a smaller batch to it
        meta.update(dla_core=core, static_batch=True)
    return meta


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


@engine.command("onnx")
@click.argument("bundle", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=False))
@device_profile_option
@weights_option(
    ["int8", "qdq-float", "fp16"], "Weight form; auto: the one engine build uses with this machine's TensorRT."
)
@dla_option
def onnx_cmd(bundle, out, profile_name, form, dla):
    """Write the model engine build gives TensorRT, and the trtexec/polygraphy commands for it."""
    from ..bundle.reader import Bundle
    from ..device_profiles import resolve
    from ..files import check_output, write_bytes_atomic
    from .weight_forms import engine_model, weight_form

    check_output(out, "engine onnx: OUT")
    if os.path.isfile(bundle):  # refused before a build of minutes, not after it
        raise UsageError("{}: engines are saved into a bundle folder; unpack the archive first".format(bundle))
    profile = resolve(profile_name)
    core = resolve_dla_core(dla, profile)
    b = Bundle.open(bundle)
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
    write_bytes_atomic(out, model)
    click.echo(
        "wrote {} ({} bytes, {} weights, input {} {})".format(
            out, len(model), form, b.input["name"], ["N"] + list(b.input["shape"])
        )
    )
    _echo_commands(
        out, b.input, profile, precision, _strongly_typed_here(precision, form), core, _tensorrt_here(profile)
    )


def _tensorrt_here(profile: dict):
    """This machine's TensorRT (major, minor), else the oldest the profile's JetPacks ship (None: unknown)."""
    try:
        import tensorrt as trt
    except ImportError:
        return profile_tensorrt(profile)
    from .loader import trt_version

    return trt_version(trt)[:2]


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


def _echo_commands(out: str, model_input, profile, precision: str, typed: bool, core=None, tensorrt=None) -> None:
    name, shape, batch = model_input["name"], model_input["shape"], dla_batch(None, profile, core)
    trtexec = trtexec_args(
        out,
        name,
        shape,
        precision,
        batch,
        profile["workspace_mb"],
        strongly_typed=typed,
        dla_core=core,
        tensorrt=tensorrt,
    )
    click.echo("trtexec:    " + " ".join(shlex.quote(a) for a in trtexec))
    # the comparison runs on the GPU, DLA engine or not
    polygraphy = polygraphy_args(out, name, shape, precision, profile["max_batch"], strongly_typed=typed)
    click.echo("polygraphy: " + " ".join(shlex.quote(a) for a in polygraphy))
