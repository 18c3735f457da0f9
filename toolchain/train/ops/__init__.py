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
  'same' padding is :func:`same_pad` of the conv's input size: for a stride-2 conv on an even size
  an asymmetric pad, e.g. 3x3/2 on 224: ``[0, 0, 1, 1]``; 5x5/2 on 56: ``[1, 1, 2, 2]``.
  Refittable: ``.weight`` (int8), ``.scale``, ``.bias``.

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

from typing import Any, Dict, List, Mapping, Sequence

from edgetool.runtime.errors import UsageError

from .base import ACTS, Env, Op, param_key, same_pad, where
from .conv import Conv, MaxPool
from .layers import Add, Fc, Gap

__all__ = ["ACTS", "REGISTRY", "Env", "Op", "entry", "normalize", "normalize_all", "param_key", "same_pad"]

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
            raise UsageError("{} reads {} before any op writes it".format(where(op), ", ".join(map(repr, missing))))
        layer = op.get("name")
        if layer is not None:
            if layer in layers:
                raise UsageError("{}: layer name used twice (ops {} and {})".format(where(op), layers[layer], i))
            layers[layer] = i
        if op["y"] in written:
            raise UsageError("{}: tensor {!r} is written twice".format(where(op), op["y"]))
        written.add(op["y"])
    if not out or out[-1]["y"] != "logits":
        raise UsageError("the last op must write the network's output 'logits'")
    return out
