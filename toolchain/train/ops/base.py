"""What every op entry shares: the :class:`Op` interface, activations, and the schema's checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from edgetool.runtime.bundle.weights import TensorSpec
from edgetool.runtime.errors import UsageError

if TYPE_CHECKING:  # the export side's graph builder, for annotations only
    from edgetool.export.onnx_export import QDQGraph

ACTS = (None, "relu", "relu6")
BN_KEYS = ("weight", "bias", "running_mean", "running_var")
RELU6_MIN, RELU6_MAX = "relu6.min", "relu6.max"  # the Clip bounds, shared by every ReLU6 of a graph


def param_key(name: str) -> str:
    """The name of an ONNX-style weight (``layer.weight``) as a parameter or buffer key of the QAT net."""
    return name.replace(".", "__")


def same_pad(size: Sequence[int], k: Sequence[int], stride: Sequence[int]) -> List[int]:
    """TensorFlow's 'same' padding of a conv or pool on an input of *size* [h, w], as the ``pad``
    [top, left, bottom, right] of an op: the output is ceil(size / stride), and the odd pixel of
    padding, where there is one, goes to the bottom and the right."""
    total = [max((-(-n // s) - 1) * s + kk - n, 0) for n, kk, s in zip(size, k, stride)]
    return [total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2]


class Env(Dict[str, torch.Tensor]):
    """The activations of one forward pass by tensor name, and the gap outputs in op order."""

    def __init__(self, x: torch.Tensor):
        super().__init__(input=x)
        self.pooled: List[torch.Tensor] = []


# -- activations -----------------------------------------------------------------------------


def activate(y: torch.Tensor, act: Optional[str]) -> torch.Tensor:
    if act == "relu":
        return F.relu(y)
    if act == "relu6":
        return F.relu6(y)
    return y


def emit_act(g: "QDQGraph", act: Optional[str], x: str, y: str, prefix: str) -> None:
    """The ONNX node of *act* from *x* to *y*, named ``<prefix>.<act>``.  ReLU6 is ``Clip`` with
    float32 scalar bounds as initializers (opset 13; TensorRT's parser wants them constant)."""
    if act == "relu":
        g.node("Relu", [x], [y], name=prefix + ".relu")
    elif act == "relu6":
        bounds = [g.const(RELU6_MIN, 0.0), g.const(RELU6_MAX, 6.0)]
        g.node("Clip", [x] + bounds, [y], name=prefix + ".relu6")


# -- schema helpers --------------------------------------------------------------------------


def where(op: Mapping[str, Any]) -> str:
    label = op.get("name") or op.get("y")
    return "op {!r}{}".format(op.get("op"), " ({})".format(label) if label else "")


def check_int(op, key, value, low) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UsageError("{}: {} must be an integer >= {}, got {!r}".format(where(op), key, low, value))
    return int(value)


def check_ints(op, key: str, value, n: int, low: int, expand: int) -> List[int]:
    """An int (repeated *expand* times) or a list of *n* ints, each >= *low*."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise UsageError("{}: {} must be an int or {} ints, got {!r}".format(where(op), key, n, value))
        return [check_int(op, key, v, low) for v in value]
    return [check_int(op, key, value, low)] * expand


def act_of(op: Mapping[str, Any]) -> Optional[str]:
    """``act``, or the legacy boolean ``relu`` (true: ``"relu"``); given both, they must agree."""
    legacy = op.get("relu")
    if legacy is not None and not isinstance(legacy, bool):
        raise UsageError("{}: relu must be true or false, got {!r}".format(where(op), legacy))
    implied = "relu" if legacy else None
    act = op.get("act", implied)
    if act not in ACTS:
        raise UsageError("{}: act must be one of {}, got {!r}".format(where(op), ", ".join(map(str, ACTS)), act))
    if legacy is not None and act != implied:
        raise UsageError("{}: relu={} contradicts act={!r}".format(where(op), legacy, act))
    return act


def names_of(op, keys: Sequence[str]) -> Dict[str, str]:
    out = {}
    for key in keys:
        v = op.get(key)
        if not isinstance(v, str) or not v:
            raise UsageError("{}: {} must be a tensor or layer name, got {!r}".format(where(op), key, v))
        out[key] = v
    return out


def window(op) -> Dict[str, List[int]]:
    """``k``, ``stride`` and ``pad`` of a conv or pool in canonical form."""
    if "k" not in op:
        raise UsageError("{}: k (the kernel size) is missing".format(where(op)))
    return {
        "k": check_ints(op, "k", op["k"], 2, 1, 2),
        "stride": check_ints(op, "stride", op.get("stride", 1), 2, 1, 2),
        "pad": check_ints(op, "pad", op.get("pad", 0), 4, 0, 4),
    }


def torch_pad(x: torch.Tensor, pad: Sequence[int], value: float = 0.0) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(input, padding) for a torch conv or pool: symmetric pads stay the layer's own padding;
    asymmetric ones become an explicit ``F.pad`` (left, right, top, bottom) and no layer padding."""
    top, left, bottom, right = pad
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, (left, right, top, bottom), value=value), (0, 0)


def weight_spec(layer: str, codes, scales) -> TensorSpec:
    w = layer + ".weight"
    return TensorSpec(w, "weight", "int8", codes[w].shape, scale=scales[w].tolist(), axis=0)


def float_spec(name: str, kind: str, floats) -> List[TensorSpec]:
    return [TensorSpec(name, kind, "float32", floats[name].shape)] if name in floats else []


# -- the entries -----------------------------------------------------------------------------


class Op:
    """One op type.  ``net`` is the :class:`~edgetool.toolchain.train.qat.QATNet` running the op,
    ``g`` the export's :class:`~edgetool.export.onnx_export.QDQGraph`."""

    kind = ""
    head = False  # its weight is the classifier head's (one scale for all rows, with headroom)

    def normalize(self, op: Mapping[str, Any]) -> dict:
        """The canonical op dict; :class:`UsageError` naming the op for anything wrong."""
        raise NotImplementedError

    def reads(self, op: dict) -> List[str]:
        """The tensors the op reads."""
        return [op["x"]]

    def weight_layer(self, op: dict) -> Optional[str]:
        """The layer whose ``.weight`` is int8 (quantized per output channel), if any."""
        return None

    def act_inputs(self, op: dict) -> List[str]:
        """The tensors quantized (one Q/DQ pair, per tensor) where this op reads them."""
        return []

    def tensors(self, op: dict) -> List[Tuple[str, str]]:
        """(IR tensor name, QATNet state_dict key) of every tensor the op owns."""
        return []

    def build(self, net, op: dict, tensors: Mapping[str, torch.Tensor]) -> None:
        """Create the op's parameters and modules in *net* from the IR *tensors*."""

    def forward(self, net, op: dict, env: Env) -> None:
        raise NotImplementedError

    def float_tensors(self, net, op: dict) -> Dict[str, np.ndarray]:
        """The deployed per-channel float tensors (refittable, float32)."""
        return {}

    def emit(self, g: "QDQGraph", op: dict) -> None:
        raise NotImplementedError

    def refit_specs(self, op: dict, codes, floats, scales) -> List[TensorSpec]:
        """The refittable tensors, in packed-layout order (int8 weight first)."""
        return []

    def _check_keys(self, op: Mapping[str, Any], keys: Sequence[str]) -> None:
        extra = sorted(set(op) - set(keys) - {"op"})
        if extra:
            raise UsageError("{}: unknown key(s) {}".format(where(op), ", ".join(extra)))
