"""Build steps for a refittable TensorRT engine, each small and returning what it makes.

``build_engine`` composes them: import TensorRT, parse the model of the chosen weight form,
set the precision, mark refit (``REFIT``, or ``REFIT_INDIVIDUAL`` with only the weights some delta
changes marked, TensorRT >= 10), on request put the layers a DLA can run on one DLA core (with GPU
fallback), add one optimization profile, build the serialized plan.

Two build paths, by what this TensorRT offers:

* strongly typed (int8 engines where ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists:
  TensorRT 10 and 11 here): the Q/DQ model fixes every layer's precision, so no ``INT8`` /
  ``FP16`` builder flag is set (TensorRT 10.12 deprecates them, 11 has no ``FP16``);
* weakly typed (int8 engines on TensorRT 8.x, and the fp16 engines of the dequantized network for
  Nano and TX2): ``INT8`` + ``FP16`` or ``FP16`` alone, with ``EXPLICIT_BATCH`` before TensorRT 10.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple

from ..errors import BackendError, DeviceError, require
from .weight_forms import engine_model, engine_name, weight_form

log = logging.getLogger(__name__)


def import_trt():
    return require("tensorrt")


def trt_version(trt) -> Tuple[int, ...]:
    return tuple(int(p) for p in trt.__version__.split(".")[:2])


_LOGGERS: dict = {}


def trt_logger(trt):
    """The one TensorRT logger of this process (TensorRT treats it as a singleton).

    Its severity follows the edgetool logger: ``-vv`` VERBOSE, ``-v`` INFO, default WARNING,
    ``-q`` ERROR.
    """
    level = log.getEffectiveLevel()
    if level <= logging.DEBUG:
        severity = trt.Logger.VERBOSE
    elif level <= logging.INFO:
        severity = trt.Logger.INFO
    else:
        severity = trt.Logger.WARNING if level <= logging.WARNING else trt.Logger.ERROR
    logger = _LOGGERS.get(id(trt))
    if logger is None:
        logger = _LOGGERS[id(trt)] = trt.Logger(severity)
    else:
        logger.min_severity = severity
    return logger


def strongly_typed(trt, precision: str) -> bool:
    """Whether an engine of *precision* is built from a strongly typed network (int8, where TensorRT offers it)."""
    return precision == "int8" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def network_flags(trt, precision: str) -> int:
    """The network creation flags: ``STRONGLY_TYPED`` for an int8 engine where TensorRT offers it, else
    ``EXPLICIT_BATCH`` before TensorRT 10 (from 10 on, explicit batch is the only mode; 11 has no flag)."""
    if strongly_typed(trt, precision):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if trt_version(trt) >= (10, 0):
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def parse_network(trt, builder, logger, model_bytes: bytes, form: str, precision: str):
    """The network of *model_bytes* in weight form *form*, with the parser that must outlive it."""
    network = builder.create_network(network_flags(trt, precision))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(engine_model(model_bytes, form)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError("TensorRT cannot parse base.onnx ({} weights): {}".format(form, errors))
    return network, parser


def precision_config(trt, builder, precision: str, workspace_mb: int):
    """A builder config with the workspace limit and the precision flags of :func:`precision_flags`."""
    if precision == "int8" and hasattr(builder, "platform_has_fast_int8") and not builder.platform_has_fast_int8:
        raise DeviceError("this GPU has no fast int8; build with a profile whose precision is fp16 (e.g. nano)")
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = int(workspace_mb) << 20
    return precision_flags(trt, config, precision)


def precision_flags(trt, config, precision: str):
    """No flag on a strongly typed network (its Q/DQ model fixes every precision); else ``INT8`` + ``FP16``
    (int8: fp16 where a layer has no int8 kernel) or ``FP16`` (the dequantized network of fp16 profiles)."""
    if strongly_typed(trt, precision):
        return config
    if not hasattr(trt.BuilderFlag, "FP16"):
        raise DeviceError(
            "TensorRT {} has no FP16 builder flag, which the {} engines of the dequantized network need "
            "(the fp16 profiles are for Jetson Nano and TX2, whose JetPack 4.6 ships TensorRT 8.2)".format(
                trt.__version__, precision
            )
        )
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    config.set_flag(trt.BuilderFlag.FP16)
    return config


def refit_flags(
    trt,
    network,
    config,
    form: str,
    refit_only: Optional[Sequence] = None,
    strip_weights: bool = False,
    refittable: bool = True,
):
    """``REFIT``, or ``REFIT_INDIVIDUAL`` with *refit_only* marked; ``STRIP_PLAN`` on request; nothing when not
    *refittable* (the non-refittable engine ``doctor`` measures the refit penalty against).  An empty
    *refit_only* (a flat bundle: no delta changes anything) keeps ``REFIT``, so the engine still takes a refitter."""
    if not refittable:
        return config
    if refit_only and hasattr(trt.BuilderFlag, "REFIT_INDIVIDUAL"):
        config.set_flag(trt.BuilderFlag.REFIT_INDIVIDUAL)
        for spec in refit_only:
            target = engine_name(spec, form)
            if not network.mark_weights_refittable(target):
                raise BackendError("TensorRT cannot mark {!r} refittable".format(target))
    else:
        config.set_flag(trt.BuilderFlag.REFIT)
    if strip_weights:
        if not hasattr(trt.BuilderFlag, "STRIP_PLAN"):
            raise DeviceError("weight-stripped plans need TensorRT >= 10 (this is {})".format(trt.__version__))
        config.set_flag(trt.BuilderFlag.STRIP_PLAN)
    return config


def dla_flags(trt, builder, config, dla_core: Optional[int] = None):
    """Nothing without *dla_core*; else every layer a DLA can run goes to DLA core *dla_core*, the others to
    the GPU (``GPU_FALLBACK``).  A core this device lacks is refused before the build."""
    if dla_core is None:
        return config
    cores = int(builder.num_DLA_cores)
    if not 0 <= dla_core < cores:
        raise DeviceError("DLA core {} asked for, and this device has {} DLA core(s)".format(dla_core, cores))
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(dla_core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return config


def batch_profile(
    builder, config, input_name: str, input_shape: Sequence[int], max_batch: int, opt_batch: int = 1, static=False
):
    """One optimization profile: batch 1 .. *max_batch*, tuned for *opt_batch*; *static* (DLA): *max_batch* only."""
    c, h, w = input_shape
    low = max_batch if static else 1
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (low, c, h, w), (max(low, min(opt_batch, max_batch)), c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)
    return config


def build_engine(
    model_bytes: bytes,
    input_name: str,
    input_shape: Sequence[int],
    precision: str = "int8",
    workspace_mb: int = 1024,
    max_batch: int = 32,
    opt_batch: int = 1,
    refit_only: Optional[Sequence] = None,
    strip_weights: bool = False,
    form: Optional[str] = None,
    dla_core: Optional[int] = None,
    refittable: bool = True,
) -> bytes:
    """Build a serialized engine (plan) on this device.

    *refit_only*: the packed tensors (layout specs) to mark refittable with REFIT_INDIVIDUAL;
    *form*: the weight form (see :mod:`.weight_forms`), by default the one for this version;
    *dla_core*: run on that DLA core with GPU fallback, at the one batch *max_batch* (DLA shapes are static);
    not *refittable*: no refit flag at all (a reference for the cost of refittability).
    """
    trt = import_trt()
    form = weight_form(trt_version(trt), precision, form)
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    config = precision_config(trt, builder, precision, workspace_mb)
    network, _parser = parse_network(trt, builder, logger, model_bytes, form, precision)
    refit_flags(trt, network, config, form, refit_only, strip_weights, refittable)
    dla_flags(trt, builder, config, dla_core)
    batch_profile(builder, config, input_name, input_shape, max_batch, opt_batch, static=dla_core is not None)
    how = "strongly typed" if strongly_typed(trt, precision) else "precision flags"
    where = "GPU" if dla_core is None else "DLA core {} + GPU fallback".format(dla_core)
    log.info("building a %s engine (%s weights, %s, %s, max batch %d)", precision, form, how, where, max_batch)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(plan)
