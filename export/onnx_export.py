"""A network's op list as a Q/DQ int8 ONNX model (TensorRT explicit quantization).

* opset 13, IR version 8 (readable by TensorRT 8.5+ and ONNX Runtime);
* weights: int8 initializers (codes in [-127, 127]) -> DequantizeLinear(axis=0) with a
  per-output-channel float scale and an all-zero int8 zero-point;
* activations: QuantizeLinear -> DequantizeLinear, per-tensor scalar scale, zero-point 0,
  on the input of every Conv and Gemm;
* each conv is followed by its BatchNorm in eval form: ``Mul`` by a per-channel float32
  ``<conv>.scale`` and ``Add`` of a per-channel float32 ``<conv>.bias`` (shape [C,1,1]);
  the fc layer is a ``Gemm`` with a float32 ``fc.bias``.
* two outputs: ``logits``, and ``features`` (:data:`FEATURES`), the pooled activations the
  fc layer reads, which a learned router's pair combiners may take in.

The refittable initializers (every ``*.weight``, ``*.scale`` and ``*.bias``) are listed among the graph
inputs too, as ONNX "overridable initializers": ONNX Runtime then lets the runtime bind
them once and update them in place; TensorRT parses them as weights.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgetool.runtime.bundle.learned_routing import FEATURES

OPSET = 13
IR_VERSION = 8


REFIT_SUFFIXES = (".weight", ".scale", ".bias")


class _Graph:
    """Nodes and initializers of the Q/DQ graph, emitted in op order."""

    def __init__(self, codes, floats, wscales, ascales):
        self.codes, self.floats, self.wscales, self.ascales = codes, floats, wscales, ascales
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self.dq_of: Dict[str, str] = {}
        self.pooled: List[str] = []  # the gap outputs, in op order

    def node(self, *args, **kwargs) -> None:
        self.nodes.append(helper.make_node(*args, **kwargs))

    def act_dq(self, t: str) -> str:
        if t in self.dq_of:
            return self.dq_of[t]
        s, z = t + ".act_scale", t + ".act_zp"
        self.inits.append(numpy_helper.from_array(np.asarray(self.ascales[t], dtype=np.float32), s))
        self.inits.append(numpy_helper.from_array(np.asarray(0, dtype=np.int8), z))
        self.node("QuantizeLinear", [t, s, z], [t + ".q"], name=t + ".quant")
        self.node("DequantizeLinear", [t + ".q", s, z], [t + ".dq"], name=t + ".dequant")
        self.dq_of[t] = t + ".dq"
        return self.dq_of[t]

    def weight_dq(self, layer: str) -> str:
        w = layer + ".weight"
        q = np.ascontiguousarray(self.codes[w], dtype=np.int8)
        sc = np.ascontiguousarray(self.wscales[w], dtype=np.float32)
        self.inits.append(numpy_helper.from_array(q, w))
        self.inits.append(numpy_helper.from_array(sc, w + "_scale"))
        self.inits.append(numpy_helper.from_array(np.zeros(q.shape[0], dtype=np.int8), w + "_zp"))
        self.node("DequantizeLinear", [w, w + "_scale", w + "_zp"], [w + ".dq"], axis=0, name=w + ".dequant")
        return w + ".dq"

    def float_init(self, name: str) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(self.floats[name], dtype=np.float32), name))
        return name

    def conv(self, op):
        x, w, n, k = self.act_dq(op["x"]), self.weight_dq(op["name"]), op["name"], op["k"]
        out = op["y"] + ".pre" if op["relu"] else op["y"]
        self.node(
            "Conv", [x, w], [n + ".conv"], name=n, kernel_shape=[k, k], strides=[op["stride"]] * 2, pads=[op["pad"]] * 4
        )
        self.node("Mul", [n + ".conv", self.float_init(n + ".scale")], [n + ".scaled"], name=n + ".bn_scale")
        self.node("Add", [n + ".scaled", self.float_init(n + ".bias")], [out], name=n + ".bn_bias")
        if op["relu"]:
            self.node("Relu", [out], [op["y"]], name=op["name"] + ".relu")

    def maxpool(self, op):
        self.node(
            "MaxPool",
            [op["x"]],
            [op["y"]],
            kernel_shape=[op["k"]] * 2,
            strides=[op["stride"]] * 2,
            pads=[op["pad"]] * 4,
            name=op["y"] + ".maxpool",
        )

    def add(self, op):
        out = op["y"] + ".pre" if op["relu"] else op["y"]
        self.node("Add", [op["a"], op["b"]], [out], name=op["y"] + ".add")
        if op["relu"]:
            self.node("Relu", [out], [op["y"]], name=op["y"] + ".relu")

    def gap(self, op):
        self.node("GlobalAveragePool", [op["x"]], [op["y"] + ".pool"], name=op["y"] + ".gap")
        self.node("Flatten", [op["y"] + ".pool"], [op["y"]], axis=1, name=op["y"] + ".flatten")
        if not self.pooled:  # one features output: the first pooling's
            self.node("Identity", [op["y"]], [FEATURES], name=FEATURES)
        self.pooled.append(op["y"])

    def fc(self, op):
        x, w = self.act_dq(op["x"]), self.weight_dq(op["name"])
        self.node("Gemm", [x, w, self.float_init(op["name"] + ".bias")], [op["y"]], transB=1, name=op["name"])


def build_model(
    ops: List[dict],
    codes: Dict[str, np.ndarray],
    floats: Dict[str, np.ndarray],
    wscales: Dict[str, np.ndarray],
    ascales: Dict[str, float],
    input_shape: Sequence[int],
    head: int,
    refit_inputs: bool = True,
    name: str = "edgetool",
) -> onnx.ModelProto:
    g = _Graph(codes, floats, wscales, ascales)
    emit = {"conv": g.conv, "maxpool": g.maxpool, "add": g.add, "gap": g.gap, "fc": g.fc}
    for op in ops:
        if op["op"] not in emit:
            raise ValueError("unknown op {}".format(op["op"]))
        emit[op["op"]](op)
    nodes, inits = g.nodes, g.inits
    c, h, w = input_shape
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w])]
    if refit_inputs:
        for t in inits:
            if t.name.endswith(REFIT_SUFFIXES):
                inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", head])]
    for o in ops:  # the fc layer on the pooled activations: its input width is the features'
        if o["op"] == "fc" and g.pooled and o["x"] == g.pooled[0]:
            width = int(np.asarray(codes[o["name"] + ".weight"]).shape[1])
            outputs.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", width]))
            break
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION, producer_name="edgetool"
    )
    onnx.checker.check_model(model)
    return model


def from_qatnet(net, input_shape, head, refit_inputs=True, codes=None, floats=None) -> onnx.ModelProto:
    """ONNX model of a :class:`~edgetool.toolchain.train.qat.QATNet` (optionally other codes/floats)."""
    return build_model(
        net.ops,
        codes if codes is not None else net.int8_codes(),
        floats if floats is not None else net.float_tensors(),
        net.weight_scales(),
        net.act_scales(),
        input_shape,
        head,
        refit_inputs,
    )
