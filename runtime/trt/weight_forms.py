"""How the refittable weights look inside a TensorRT engine, and which stored engine fits.

The bundle stores weights one way (int8 codes feeding ``DequantizeLinear``, float32
per-channel tensors).  The engine may need them another way, so the model handed to the
TensorRT parser and the arrays handed to the refitter both follow a *weight form*:

``int8``
    TensorRT >= 10: the int8 codes are engine weights as they are (pre-quantized weights
    feeding a Dequantize layer).  A switch writes codes; the CUDA kernel adds the delta in
    place in the registered device buffer.
``qdq-float``
    TensorRT 8.5 / 8.6 (JetPack 5.1, 6.0): their Constant layer takes int32/fp16/fp32 only, and
    their Q/DQ weights are float weights that TensorRT quantizes with the QuantizeLinear
    scale.  Each int8 initializer ``W`` becomes a float32 initializer ``W.fp = W * scale``
    feeding ``QuantizeLinear -> DequantizeLinear``.  ``round(W.fp / scale) == W`` exactly, so
    the engine's int8 weights are the bundle's codes, bit for bit.
``fp16``
    Devices without int8 (Nano, TX2): ``W.fp = W * scale`` and no Q/DQ at all.

Everything here runs without TensorRT and is covered by the CPU tests; the TensorRT backend
only calls it.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ..choices import WEIGHT_FORMS as FORMS
from ..errors import UsageError, require
from ..bundle.onnx_weights import strip_initializer_inputs

FLOAT_SUFFIX = ".fp"


def weight_form(trt_version: Tuple[int, ...], precision: str, override: Optional[str] = None) -> str:
    """The weight form for an engine of *precision* built by TensorRT *trt_version*."""
    if precision == "fp16":
        return "fp16"
    if precision != "int8":
        raise UsageError("precision must be int8 or fp16, got {!r}".format(precision))
    if override not in (None, "auto"):
        if override not in FORMS or override == "fp16":
            raise UsageError("weight form for an int8 engine must be int8 or qdq-float, got {!r}".format(override))
        return override
    return "int8" if tuple(trt_version) >= (10, 0) else "qdq-float"


def engine_name(spec, form: str) -> str:
    """The refit name of packed tensor *spec* inside an engine of *form*."""
    return spec.name + FLOAT_SUFFIX if form != "int8" and spec.dtype == "int8" else spec.name


def engine_model(model_bytes: bytes, form: str) -> bytes:
    """The ONNX model handed to the TensorRT parser for *form*."""
    model = strip_initializer_inputs(model_bytes)
    if form == "int8":
        return model
    if form not in FORMS:
        raise UsageError("unknown weight form {!r}; choose one of {}".format(form, ", ".join(FORMS)))
    return _float_weights(model, keep_qdq=form == "qdq-float")


def host_arrays(layout, packed: np.ndarray, form: str) -> Dict[str, np.ndarray]:
    """Engine name -> contiguous array the refitter reads, for the packed weights *packed*.

    For the float forms these are exactly the float initializers :func:`engine_model` wrote
    for the same codes (same float32 product, same scale values).
    """
    if form == "int8":
        return layout.views(packed)
    deq = layout.dequantize(packed)
    return {engine_name(t, form): np.ascontiguousarray(deq[t.name], dtype=np.float32) for t in layout.tensors}


def _float_weights(model_bytes: bytes, keep_qdq: bool) -> bytes:
    onnx = require("onnx", "jetson")
    from onnx import helper, numpy_helper

    m = onnx.load_from_string(model_bytes)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    rename: Dict[str, str] = {}
    nodes, new_inits = [], []
    for n in g.node:
        weight_dq = n.op_type == "DequantizeLinear" and n.input[0] in inits
        if weight_dq:
            q = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            s = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if s.ndim:
                shape[axis] = -1
            fp_name = n.input[0] + FLOAT_SUFFIX
            new_inits.append(numpy_helper.from_array(q * s.reshape(shape), fp_name))
            if keep_qdq:
                qname = n.output[0] + "_q"
                attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
                nodes.append(
                    helper.make_node(
                        "QuantizeLinear",
                        [fp_name, n.input[1], n.input[2]],
                        [qname],
                        name=(n.name or n.output[0]) + "_weight_q",
                        **attrs,
                    )
                )
                dq = onnx.NodeProto()
                dq.CopyFrom(n)
                dq.input[0] = qname
                nodes.append(dq)
            else:
                rename[n.output[0]] = fp_name
        elif not keep_qdq and n.op_type == "QuantizeLinear":
            rename[n.output[0]] = n.input[0]
        elif not keep_qdq and n.op_type == "DequantizeLinear":
            rename[n.output[0]] = rename.get(n.input[0], n.input[0])
        else:
            nodes.append(n)
    for n in nodes:
        for i, name in enumerate(n.input):
            while name in rename:
                name = rename[name]
            n.input[i] = name
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    survivors = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(survivors + [t for t in new_inits if t.name in used])
    inputs = [i for i in g.input if i.name not in inits]
    del g.input[:]
    g.input.extend(inputs)
    return m.SerializeToString()
