"""The NVIDIA tool command lines that reproduce and cross-check ``edgetool engine build``, and its DLA choice.

``trtexec`` builds the same refittable engine from the model ``edgetool engine onnx`` writes;
``polygraphy run --onnxrt --trt`` compares TensorRT with ONNX Runtime on it.  Nothing here
needs TensorRT.

DLA (``--dla-core``): Jetson Xavier and Orin AGX / NX have DLA cores (the device profile's ``dla``
count).  An engine for one runs every layer the DLA can run on that core and the others on the
GPU (``GPU_FALLBACK``).  The DLA takes static shapes only, so a DLA engine has one batch size
(:func:`dla_batch`), and the runner pads a smaller batch to it.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

from ..errors import UsageError

DLA_BATCH = 1  # a DLA engine's batch unless --max-batch says otherwise
# The TensorRT of each JetPack a device profile lists (NVIDIA's JetPack release notes): where no TensorRT is
# installed, the trtexec line is written for the oldest TensorRT the profile's devices run.
JETPACK_TENSORRT = {
    "4.6": (8, 2),
    "5.0": (8, 4),
    "5.1": (8, 5),
    "6.0": (8, 6),
    "6.1": (10, 3),
    "6.2": (10, 3),
    "7.0": (10, 13),
}
MEMPOOL = (8, 4)  # trtexec's --memPoolSize arrived in TensorRT 8.4; before it, --workspace (MiB)


def profile_tensorrt(profile: dict) -> Optional[Tuple[int, int]]:
    """The oldest TensorRT among the JetPacks *profile* lists (None: a profile with none, e.g. desktop-gpu)."""
    found = [JETPACK_TENSORRT[j] for j in profile.get("jetpack", []) if j in JETPACK_TENSORRT]
    return min(found) if found else None


def resolve_dla_core(value: Optional[str], profile: dict) -> Optional[int]:
    """The DLA core of ``--dla-core`` *value* (a number, or ``auto``: core 0), checked against *profile*'s
    ``dla`` count; None without the option (no DLA unless asked for)."""
    if value is None:
        return None
    count, name = int(profile.get("dla", 0)), profile["name"]
    if value.strip().lower() == "auto":
        core = 0
    else:
        try:
            core = int(value)
        except ValueError:
            raise UsageError("--dla-core takes a DLA core number or auto, got {!r}".format(value)) from None
    if count < 1:
        raise UsageError("--dla-core {}: device profile {} has no DLA".format(value, name))
    if not 0 <= core < count:
        raise UsageError(
            "--dla-core {}: device profile {} has {} DLA core(s), numbered 0..{}".format(core, name, count, count - 1)
        )
    return core


def dla_batch(max_batch: Optional[int], profile: dict, core: Optional[int]) -> int:
    """The engine's largest batch: *max_batch*, else the profile's; a DLA engine's one batch: *max_batch*, else 1."""
    if core is not None:
        return int(max_batch or DLA_BATCH)
    return int(max_batch or profile["max_batch"])


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
    dla_core: Optional[int] = None,
    tensorrt: Optional[Sequence[int]] = None,
) -> List[str]:
    """The trtexec command that builds the same refittable engine as ``engine build --refit-all``
    (with *dla_core*: on that DLA core with GPU fallback, and the one batch *max_batch*), in the flags of
    the trtexec of *tensorrt* (major, minor; None: 8.4 or newer)."""
    c, h, w = input_shape
    low = max_batch if dla_core is not None else 1
    shapes = {
        k: "{}:{}".format(input_name, _dims((b, c, h, w), "x"))
        for k, b in (("min", low), ("opt", max(low, min(opt_batch, max_batch))), ("max", max_batch))
    }
    args = [
        "trtexec",
        "--onnx=" + onnx_path,
        "--saveEngine=" + os.path.splitext(onnx_path)[0] + ".plan",
        "--minShapes=" + shapes["min"],
        "--optShapes=" + shapes["opt"],
        "--maxShapes=" + shapes["max"],
        _workspace(int(workspace_mb), tensorrt),
    ]
    args += _precision_args(precision, strongly_typed, "--stronglyTyped") + ["--refit"]
    if strip_weights:
        args.append("--stripWeights")
    if dla_core is not None:
        args += ["--useDLACore={}".format(int(dla_core)), "--allowGPUFallback"]
    return args


def _workspace(mb: int, tensorrt: Optional[Sequence[int]]) -> str:
    if tensorrt is not None and tuple(tensorrt)[:2] < MEMPOOL:
        return "--workspace={}".format(mb)
    return "--memPoolSize=workspace:{}".format(mb)


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
