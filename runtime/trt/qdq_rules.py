"""Check a Q/DQ ONNX model against TensorRT's explicit-quantization rules.

Each rule violation is one line naming the node or initializer.  ``check`` returns the
list; ``require_valid`` raises one :class:`UsageError` that lists them all.
"""

from __future__ import annotations

from typing import List

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import UsageError

# Quantized operators TensorRT's ONNX parser does not import (it wants Q/DQ + float ops).
REJECTED_OPS = {
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QLinearAdd",
    "QLinearMul",
    "QLinearGlobalAveragePool",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "DynamicQuantizeLinear",
    "QLinearConcat",
    "QLinearAveragePool",
}
WEIGHT_CONSUMERS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def check(model: onnx.ModelProto) -> List[str]:
    problems: List[str] = []
    opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [0])
    if opset < 13:
        problems.append("opset {} < 13: per-channel Q/DQ needs opset 13 or newer".format(opset))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    for n in g.node:
        name = n.name or n.output[0]
        if n.op_type in REJECTED_OPS:
            problems.append(
                "node {} ({}): quantized operator TensorRT rejects; use QuantizeLinear/DequantizeLinear "
                "around float ops".format(name, n.op_type)
            )
        if n.op_type == "BatchNormalization":
            problems.append("node {}: BatchNormalization left in the graph (fold it before QAT)".format(name))
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems += _qdq_problems(n, name, inits, producers)
        if n.op_type == "Clip":
            problems += _clip_problems(n, name, inits)
    problems += _weight_problems(g, inits, producers)
    return problems


def _qdq_problems(n, name: str, inits, producers) -> List[str]:
    """Rules of one QuantizeLinear / DequantizeLinear node."""
    if len(n.input) < 3 or n.input[2] not in inits:
        return ["node {}: zero-point missing or not a constant (TensorRT needs an explicit 0)".format(name)]
    if n.input[1] not in inits:
        return ["node {}: scale is not a constant initializer".format(name)]
    problems = []
    zp = numpy_helper.to_array(inits[n.input[2]])
    scale = numpy_helper.to_array(inits[n.input[1]])
    if zp.dtype != np.int8:
        problems.append("node {}: zero-point dtype {} (TensorRT int8 needs int8, symmetric)".format(name, zp.dtype))
    if np.any(zp != 0):
        problems.append("node {}: zero-point is not 0 (asymmetric quantization)".format(name))
    if np.any(~np.isfinite(scale)) or np.any(scale <= 0):
        problems.append("node {}: scale must be finite and > 0".format(name))
    axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
    # A weight: int8 codes into DequantizeLinear, or float weights into QuantizeLinear and
    # its DequantizeLinear (the form TensorRT 8.x builds from; see runtime/trt/weight_forms.py).
    src = n.input[0]
    q = producers.get(src)
    if n.op_type == "DequantizeLinear" and q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inits:
        src = q.input[0]
    if src not in inits:
        if scale.size != 1:
            problems.append(
                "node {}: activation scales must be per-tensor (scalar), got {} values".format(name, scale.size)
            )
        return problems
    w = numpy_helper.to_array(inits[src])
    if scale.ndim == 1 and scale.size > 1:
        if axis != 0:
            problems.append("node {}: per-channel weight scales must be on axis 0, got axis {}".format(name, axis))
        elif scale.size != w.shape[0]:
            problems.append("node {}: {} weight scales for {} output channels".format(name, scale.size, w.shape[0]))
    if w.dtype == np.int8 and w.size and int(w.min()) == -128:
        problems.append("initializer {}: code -128 in symmetric weights (use [-127, 127])".format(src))
    return problems


def _clip_problems(n, name: str, inits) -> List[str]:
    """A Clip (ReLU6) becomes a TensorRT activation, which TensorRT 8.x's ONNX parser builds only
    from constant bounds: each given min/max must be a scalar initializer."""
    problems = []
    for bound, t in zip(("min", "max"), n.input[1:3]):
        if not t:  # an omitted optional input
            continue
        if t not in inits:
            problems.append("node {}: Clip {} {} is not a constant initializer".format(name, bound, t))
        elif numpy_helper.to_array(inits[t]).size != 1:
            problems.append("node {}: Clip {} {} is not a scalar".format(name, bound, t))
    return problems


def _weight_problems(g, inits, producers) -> List[str]:
    """Every conv/gemm weight should come through a DequantizeLinear of an int8 initializer."""
    problems = []
    for n in g.node:
        if n.op_type in WEIGHT_CONSUMERS and len(n.input) > 1:
            w = n.input[WEIGHT_CONSUMERS[n.op_type]]
            p = producers.get(w)
            if w in inits:
                problems.append("node {}: float weight {} is not quantized (no DequantizeLinear)".format(n.name, w))
            elif p is not None and p.op_type == "DequantizeLinear" and p.input[0] not in inits:
                src = producers.get(p.input[0])
                if src is None or src.op_type != "QuantizeLinear":
                    problems.append("node {}: weight dequantizes a non-constant".format(n.name))
    return problems


def require_valid(model: onnx.ModelProto, source: str = "model") -> None:
    problems = check(model)
    if problems:
        raise UsageError("{} breaks TensorRT explicit-quantization rules: {}".format(source, "; ".join(problems)))
