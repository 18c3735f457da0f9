"""A TensorRT refit replayed in ONNX Runtime on the CPU: proves a weight form without a GPU."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ..backends.base import BASE, targets
from ..backends.ort import plain_session
from ..errors import require
from ..bundle.onnx_weights import read_initializers
from .weight_forms import engine_model, host_arrays


def emulate_refit(bundle, form: str, x: np.ndarray) -> Dict[int, Tuple[np.ndarray, np.ndarray]]:
    """Run the refit of *form* through ONNX Runtime on the CPU, for the base and every subclass.

    For each network: the engine's model (:func:`engine_model` of the base) with the arrays
    :func:`host_arrays` gives the refitter swapped in, and the engine's model built from that
    network itself.  Both outputs on *x* are returned; they must be identical.  ``edgetool
    doctor`` and the tests use this to prove the weight form without TensorRT.
    """
    onnx = require("onnx", "jetson")
    from onnx import numpy_helper

    layout = bundle.layout
    model = bundle.base_onnx()
    base = layout.pack(read_initializers(model, [t.name for t in layout.tensors]))
    refit = onnx.load_from_string(engine_model(model, form))
    own = onnx.load_from_string(model)
    feed = {bundle.input["name"]: x}
    out = {}
    for target in targets(bundle.num_superclasses):
        packed = base if target == BASE else layout.apply_delta(base, bundle.read_delta(target))
        for graph, arrays in ((refit.graph, host_arrays(layout, packed, form)), (own.graph, layout.views(packed))):
            for t in graph.initializer:
                if t.name in arrays:
                    t.CopyFrom(numpy_helper.from_array(np.asarray(arrays[t.name]), t.name))
        got = plain_session(refit.SerializeToString(), ["CPUExecutionProvider"]).run(None, feed)[0]
        want = plain_session(engine_model(own.SerializeToString(), form), ["CPUExecutionProvider"]).run(None, feed)[0]
        out[target] = (got, want)
    return out
