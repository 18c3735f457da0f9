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

This module holds the Q/DQ conventions (:class:`QDQGraph`); what each op type emits is its entry
in the toolchain's op registry (``edgetool.toolchain.train.ops``), reached through the network:
:func:`from_qatnet` hands ``net.emit_onnx`` to :func:`build_model`.

The refittable initializers (every int8 weight and every per-channel float tensor) are listed
among the graph inputs too, as ONNX "overridable initializers": ONNX Runtime then lets the runtime
bind them once and update them in place; TensorRT parses them as weights.  Other constants (the
Q/DQ scales, ReLU6's Clip bounds) stay plain initializers.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Set

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgetool.runtime.bundle.learned_routing import FEATURES

OPSET = 13
IR_VERSION = 8


class QDQGraph:
    """Nodes and initializers of the Q/DQ graph, in emission order, and the primitives an op's
    emitter builds from."""

    def __init__(self, codes, floats, wscales, ascales):
        self.codes, self.floats, self.wscales, self.ascales = codes, floats, wscales, ascales
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self.refittable: Set[str] = set()  # initializers that are also graph inputs
        self.dq_of: Dict[str, str] = {}
        self.consts: Dict[str, float] = {}
        self.pooled: List[str] = []  # the gap outputs, in op order
        self.features_width: Optional[int] = None

    def node(self, *args, **kwargs) -> None:
        self.nodes.append(helper.make_node(*args, **kwargs))

    def act_dq(self, t: str) -> str:
        """Activation *t* through its per-tensor Q/DQ pair (one per tensor, shared by its readers)."""
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
        """``<layer>.weight``: refittable int8 codes, dequantized per output channel (axis 0)."""
        w = layer + ".weight"
        q = np.ascontiguousarray(self.codes[w], dtype=np.int8)
        sc = np.ascontiguousarray(self.wscales[w], dtype=np.float32)
        self.inits.append(numpy_helper.from_array(q, w))
        self.refittable.add(w)
        self.inits.append(numpy_helper.from_array(sc, w + "_scale"))
        self.inits.append(numpy_helper.from_array(np.zeros(q.shape[0], dtype=np.int8), w + "_zp"))
        self.node("DequantizeLinear", [w, w + "_scale", w + "_zp"], [w + ".dq"], axis=0, name=w + ".dequant")
        return w + ".dq"

    def float_init(self, name: str) -> str:
        """A refittable float32 tensor (a deployed BatchNorm's scale or bias, a bias)."""
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(self.floats[name], dtype=np.float32), name))
        self.refittable.add(name)
        return name

    def const(self, name: str, value: float) -> str:
        """A float32 scalar constant (not refittable), written once per graph."""
        if name in self.consts:
            if self.consts[name] != value:
                raise ValueError("constant {} is {} and {}".format(name, self.consts[name], value))
            return name
        self.consts[name] = value
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def pooled_output(self, t: str) -> None:
        """*t* is a global pooling's output; the first one is also the ``features`` output."""
        if not self.pooled:
            self.node("Identity", [t], [FEATURES], name=FEATURES)
        self.pooled.append(t)

    def reads_features(self, t: str, weight: str) -> None:
        """A layer with *weight* [out, in] reads *t*: if *t* is the features, their width is ``in``."""
        if self.features_width is None and self.pooled and t == self.pooled[0]:
            self.features_width = int(np.asarray(self.codes[weight]).shape[1])


Emit = Callable[[QDQGraph, dict], None]


def build_model(
    ops: List[dict],
    codes: Dict[str, np.ndarray],
    floats: Dict[str, np.ndarray],
    wscales: Dict[str, np.ndarray],
    ascales: Dict[str, float],
    input_shape: Sequence[int],
    head: int,
    emit: Emit,
    refit_inputs: bool = True,
    name: str = "edgetool",
) -> onnx.ModelProto:
    """The ONNX model of *ops*; ``emit(graph, op)`` emits one op (its registry entry)."""
    g = QDQGraph(codes, floats, wscales, ascales)
    for op in ops:
        emit(g, op)
    c, h, w = input_shape
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w])]
    if refit_inputs:
        for t in g.inits:
            if t.name in g.refittable:
                inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", head])]
    if g.features_width is not None:  # a layer on the pooled activations gives the features' width
        outputs.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", g.features_width]))
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.inits)
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
        net.emit_onnx,
        refit_inputs,
    )
