"""The IR's op registry: everything one op type means, in one entry.

A network is a flat list of op dicts (``ResNet.to_ir()`` and any other model's ``to_ir()``
build one) plus a dict of raw tensors.  :class:`~edgetool.toolchain.train.qat.QATNet` runs the
list with fake quantization, the ONNX exporter emits it node by node, and the bundle writer lays
out its refittable tensors; each of them asks the op's entry here (:func:`entry`) and knows no op
type of its own.  The export side never imports the toolchain: it reaches these entries through
the network it is handed (``QATNet.emit_onnx``, ``QATNet.refit_specs``).

Tensor names: the network's input is ``"input"``, its output (the last fc's ``y``) ``"logits"``;
every other activation is named by the op that writes it (``ResNet.to_ir()`` uses ``t1``, ``t2``,
...).  A tensor is written once.  Layer names (``name``) are unique and name the layer's
parameters (``<name>.weight`` ...) and its ONNX nodes and initializers.

Op schema (keys not listed are refused; "[a, b]" lists may also be tuples):

``conv``: convolution, BatchNorm, optional activation::

    {"op": "conv", "name": str, "x": str, "y": str,
     "k": int | [kh, kw],                       # kernel size
     "stride": int | [sh, sw],                  # default 1
     "pad": int | [top, left, bottom, right],   # zero padding, default 0
     "groups": int,                             # default 1; depthwise: groups == C_in == C_out
     "act": None | "relu" | "relu6",            # default None (the legacy "relu": bool is read:
                                                #   True -> "relu", False -> None)
     "eps": float}                              # BatchNorm epsilon, default 1e-5

  Tensors: ``<name>.weight`` float [C_out, C_in / groups, kh, kw], and BatchNorm
  ``<name>.bn.{weight, bias, running_mean, running_var}`` [C_out].  The weight is quantized per
  output channel (axis 0, also for a depthwise [C, 1, kh, kw] weight), symmetric int8; the input
  per tensor.  Deployed as int8 ``Conv`` (``pads`` in ONNX order [top, left, bottom, right],
  ``group`` when not 1), then the BatchNorm in eval form: ``Mul`` by ``<name>.scale`` and
  ``Add`` of ``<name>.bias`` (float32 [C_out, 1, 1]), then ``Relu`` or ``Clip(0, 6)``.  TF-style
  'same' padding of a stride-2 conv is an asymmetric pad, e.g. 3x3/2 on an even size:
  ``[0, 0, 1, 1]``; 5x5/2: ``[1, 1, 2, 2]``.  Refittable: ``.weight`` (int8), ``.scale``, ``.bias``.

``maxpool``: ``{"op": "maxpool", "x", "y", "k", "stride", "pad"}`` with ``k``, ``stride``
  (default 1) and ``pad`` (default 0) as for ``conv``; padding never wins the max.

``add``: ``{"op": "add", "a": str, "b": str, "y": str, "act": None | "relu" | "relu6"}``,
  elementwise ``a + b`` then the activation (default None; legacy ``"relu": bool`` read as for
  ``conv``).  ResNet blocks use ``"relu"``, MobileNet/EfficientNet residuals None.

``gap``: ``{"op": "gap", "x", "y"}``: global average pool and flatten to [N, C].  The first gap's
  output is also the exported graph's ``features`` output.

``fc``: ``{"op": "fc", "name", "x", "y"}``: ``y = x W^T + b`` on [N, C] activations; tensors
  ``<name>.weight`` [out, in] and ``<name>.bias`` [out].  The classifier head: its weights share one
  scale (with headroom; :meth:`QATNet.init_weight_scales`).  Refittable: ``.weight``, ``.bias``.

:func:`normalize` turns an op into its canonical form (every key present, ``k`` and ``stride``
as [h, w], ``pad`` as [top, left, bottom, right], ``act`` instead of ``relu``); a QATNet keeps the
canonical ops, so checkpoints written before these keys existed still load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
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


def _where(op: Mapping[str, Any]) -> str:
    label = op.get("name") or op.get("y")
    return "op {!r}{}".format(op.get("op"), " ({})".format(label) if label else "")


def _int(op, key, value, low) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UsageError("{}: {} must be an integer >= {}, got {!r}".format(_where(op), key, low, value))
    return int(value)


def _ints(op, key: str, value, n: int, low: int, expand: int) -> List[int]:
    """An int (repeated *expand* times) or a list of *n* ints, each >= *low*."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise UsageError("{}: {} must be an int or {} ints, got {!r}".format(_where(op), key, n, value))
        return [_int(op, key, v, low) for v in value]
    return [_int(op, key, value, low)] * expand


def _act(op: Mapping[str, Any]) -> Optional[str]:
    """``act``, or the legacy boolean ``relu`` (true: ``"relu"``); given both, they must agree."""
    legacy = op.get("relu")
    if legacy is not None and not isinstance(legacy, bool):
        raise UsageError("{}: relu must be true or false, got {!r}".format(_where(op), legacy))
    implied = "relu" if legacy else None
    act = op.get("act", implied)
    if act not in ACTS:
        raise UsageError("{}: act must be one of {}, got {!r}".format(_where(op), ", ".join(map(str, ACTS)), act))
    if legacy is not None and act != implied:
        raise UsageError("{}: relu={} contradicts act={!r}".format(_where(op), legacy, act))
    return act


def _names(op, keys: Sequence[str]) -> Dict[str, str]:
    out = {}
    for key in keys:
        v = op.get(key)
        if not isinstance(v, str) or not v:
            raise UsageError("{}: {} must be a tensor or layer name, got {!r}".format(_where(op), key, v))
        out[key] = v
    return out


def _window(op) -> Dict[str, List[int]]:
    """``k``, ``stride`` and ``pad`` of a conv or pool in canonical form."""
    if "k" not in op:
        raise UsageError("{}: k (the kernel size) is missing".format(_where(op)))
    return {
        "k": _ints(op, "k", op["k"], 2, 1, 2),
        "stride": _ints(op, "stride", op.get("stride", 1), 2, 1, 2),
        "pad": _ints(op, "pad", op.get("pad", 0), 4, 0, 4),
    }


def _torch_pad(x: torch.Tensor, pad: Sequence[int], value: float = 0.0) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(input, padding) for a torch conv or pool: symmetric pads stay the layer's own padding;
    asymmetric ones become an explicit ``F.pad`` (left, right, top, bottom) and no layer padding."""
    top, left, bottom, right = pad
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, (left, right, top, bottom), value=value), (0, 0)


def _weight_spec(layer: str, codes, scales) -> TensorSpec:
    w = layer + ".weight"
    return TensorSpec(w, "weight", "int8", codes[w].shape, scale=scales[w].tolist(), axis=0)


def _float_spec(name: str, kind: str, floats) -> List[TensorSpec]:
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
            raise UsageError("{}: unknown key(s) {}".format(_where(op), ", ".join(extra)))


class Conv(Op):
    kind = "conv"
    KEYS = ("name", "x", "y", "k", "stride", "pad", "groups", "act", "relu", "eps")

    def normalize(self, op):
        self._check_keys(op, self.KEYS)
        out: Dict[str, Any] = {"op": self.kind}
        out.update(_names(op, ("name", "x", "y")))
        out.update(_window(op))
        out["groups"] = _int(op, "groups", op.get("groups", 1), 1)
        out["act"] = _act(op)
        eps = op.get("eps", 1e-5)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise UsageError("{}: eps must be a number > 0, got {!r}".format(_where(op), eps))
        out["eps"] = float(eps)
        return out

    def weight_layer(self, op):
        return op["name"]

    def act_inputs(self, op):
        return [op["x"]]

    def tensors(self, op):
        n = op["name"]
        own = [(n + ".weight", "params." + param_key(n + ".weight"))]
        return own + [("{}.bn.{}".format(n, k), "bns.{}.{}".format(param_key(n), k)) for k in BN_KEYS]

    def build(self, net, op, tensors):
        n = op["name"]
        w = tensors[n + ".weight"]
        kh, kw = op["k"]
        if w.dim() != 4 or tuple(w.shape[2:]) != (kh, kw) or w.shape[0] % op["groups"]:
            raise UsageError(
                "{}: weight of shape {} is not [C_out, C_in/{}, {}, {}] with C_out a multiple of groups".format(
                    _where(op), list(w.shape), op["groups"], kh, kw
                )
            )
        net.params[param_key(n + ".weight")] = nn.Parameter(w.clone().float())
        bn = nn.BatchNorm2d(w.shape[0], eps=op["eps"])
        with torch.no_grad():
            for k in BN_KEYS:
                getattr(bn, k).copy_(tensors["{}.bn.{}".format(n, k)])
        net.bns[param_key(n)] = bn

    def forward(self, net, op, env):
        x, padding = _torch_pad(net._fq_a(env[op["x"]], op["x"]), op["pad"])
        y = F.conv2d(x, net._fq_w(op["name"]), None, op["stride"], padding, 1, op["groups"])
        env[op["y"]] = activate(net.bns[param_key(op["name"])](y), op["act"])

    def float_tensors(self, net, op):
        bn = net.bns[param_key(op["name"])]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        return {
            op["name"] + ".scale": scale.float().reshape(-1, 1, 1).cpu().numpy().copy(),
            op["name"] + ".bias": bias.float().reshape(-1, 1, 1).cpu().numpy().copy(),
        }

    def emit(self, g, op):
        n = op["name"]
        x, w = g.act_dq(op["x"]), g.weight_dq(n)
        out = op["y"] + ".pre" if op["act"] else op["y"]
        attrs: Dict[str, Any] = dict(kernel_shape=list(op["k"]), strides=list(op["stride"]), pads=list(op["pad"]))
        if op["groups"] != 1:
            attrs["group"] = op["groups"]
        g.node("Conv", [x, w], [n + ".conv"], name=n, **attrs)
        g.node("Mul", [n + ".conv", g.float_init(n + ".scale")], [n + ".scaled"], name=n + ".bn_scale")
        g.node("Add", [n + ".scaled", g.float_init(n + ".bias")], [out], name=n + ".bn_bias")
        emit_act(g, op["act"], out, op["y"], n)

    def refit_specs(self, op, codes, floats, scales):
        n = op["name"]
        return (
            [_weight_spec(n, codes, scales)]
            + _float_spec(n + ".scale", "scale", floats)
            + _float_spec(n + ".bias", "bias", floats)
        )


class MaxPool(Op):
    kind = "maxpool"

    def normalize(self, op):
        self._check_keys(op, ("x", "y", "k", "stride", "pad"))
        out: Dict[str, Any] = {"op": self.kind}
        out.update(_names(op, ("x", "y")))
        out.update(_window(op))
        return out

    def forward(self, net, op, env):
        x, padding = _torch_pad(env[op["x"]], op["pad"], float("-inf"))
        env[op["y"]] = F.max_pool2d(x, op["k"], op["stride"], padding)

    def emit(self, g, op):
        g.node(
            "MaxPool",
            [op["x"]],
            [op["y"]],
            kernel_shape=list(op["k"]),
            strides=list(op["stride"]),
            pads=list(op["pad"]),
            name=op["y"] + ".maxpool",
        )


class Add(Op):
    kind = "add"

    def normalize(self, op):
        self._check_keys(op, ("a", "b", "y", "act", "relu"))
        out: Dict[str, Any] = {"op": self.kind}
        out.update(_names(op, ("a", "b", "y")))
        out["act"] = _act(op)
        return out

    def reads(self, op):
        return [op["a"], op["b"]]

    def forward(self, net, op, env):
        env[op["y"]] = activate(env[op["a"]] + env[op["b"]], op["act"])

    def emit(self, g, op):
        out = op["y"] + ".pre" if op["act"] else op["y"]
        g.node("Add", [op["a"], op["b"]], [out], name=op["y"] + ".add")
        emit_act(g, op["act"], out, op["y"], op["y"])


class Gap(Op):
    kind = "gap"

    def normalize(self, op):
        self._check_keys(op, ("x", "y"))
        return dict({"op": self.kind}, **_names(op, ("x", "y")))

    def forward(self, net, op, env):
        env[op["y"]] = torch.flatten(F.adaptive_avg_pool2d(env[op["x"]], 1), 1)
        env.pooled.append(env[op["y"]])

    def emit(self, g, op):
        g.node("GlobalAveragePool", [op["x"]], [op["y"] + ".pool"], name=op["y"] + ".gap")
        g.node("Flatten", [op["y"] + ".pool"], [op["y"]], axis=1, name=op["y"] + ".flatten")
        g.pooled_output(op["y"])


class Fc(Op):
    kind = "fc"
    head = True

    def normalize(self, op):
        self._check_keys(op, ("name", "x", "y"))
        return dict({"op": self.kind}, **_names(op, ("name", "x", "y")))

    def weight_layer(self, op):
        return op["name"]

    def act_inputs(self, op):
        return [op["x"]]

    def tensors(self, op):
        return [
            ("{}.{}".format(op["name"], k), "params." + param_key("{}.{}".format(op["name"], k)))
            for k in ("weight", "bias")
        ]

    def build(self, net, op, tensors):
        for k in ("weight", "bias"):
            t = tensors["{}.{}".format(op["name"], k)]
            net.params[param_key("{}.{}".format(op["name"], k))] = nn.Parameter(t.clone().float())

    def forward(self, net, op, env):
        xin = net._fq_a(env[op["x"]], op["x"])
        env[op["y"]] = F.linear(xin, net._fq_w(op["name"]), net.weight(op["name"] + ".bias"))

    def float_tensors(self, net, op):
        return {op["name"] + ".bias": net.weight(op["name"] + ".bias").detach().float().cpu().numpy().copy()}

    def emit(self, g, op):
        x, w = g.act_dq(op["x"]), g.weight_dq(op["name"])
        g.node("Gemm", [x, w, g.float_init(op["name"] + ".bias")], [op["y"]], transB=1, name=op["name"])
        g.reads_features(op["x"], op["name"] + ".weight")

    def refit_specs(self, op, codes, floats, scales):
        return [_weight_spec(op["name"], codes, scales)] + _float_spec(op["name"] + ".bias", "bias", floats)


REGISTRY: Dict[str, Op] = {e.kind: e for e in (Conv(), MaxPool(), Add(), Gap(), Fc())}


def entry(op: Mapping[str, Any]) -> Op:
    """The registry entry of *op*."""
    kind = op.get("op")
    if kind not in REGISTRY:
        raise UsageError("unknown op {!r}; known: {}".format(kind, ", ".join(REGISTRY)))
    return REGISTRY[kind]


def normalize(op: Mapping[str, Any]) -> dict:
    """*op* in canonical form (a new dict)."""
    return entry(op).normalize(op)


def normalize_all(ops: Sequence[Mapping[str, Any]]) -> List[dict]:
    """Every op in canonical form, checked as a graph: each tensor is written once and before it
    is read, layer names are unique, and the last op writes ``logits``."""
    out = [normalize(op) for op in ops]
    layers: Dict[str, int] = {}
    written = {"input"}
    for i, op in enumerate(out):
        missing = [t for t in entry(op).reads(op) if t not in written]
        if missing:
            raise UsageError("{} reads {} before any op writes it".format(_where(op), ", ".join(map(repr, missing))))
        layer = op.get("name")
        if layer is not None:
            if layer in layers:
                raise UsageError("{}: layer name used twice (ops {} and {})".format(_where(op), layers[layer], i))
            layers[layer] = i
        if op["y"] in written:
            raise UsageError("{}: tensor {!r} is written twice".format(_where(op), op["y"]))
        written.add(op["y"])
    if not out or out[-1]["y"] != "logits":
        raise UsageError("the last op must write the network's output 'logits'")
    return out
