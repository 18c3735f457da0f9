"""Fit check: will a bundle stay resident within a device profile's memory budget?

The estimate is deliberately an upper bound, built from what the manifest declares:

- weights: the engine's weights (int8 codes, or fp16 after dequantization, plus float scales
  and biases) and the two persistent device buffers of the refit path (base codes and the
  current network's weights);
- activations: per image, the float input plus two live activation tensors of the widest
  layer at the input's full resolution (strides only shrink this), times the batch size;
- the engine workspace of the profile;
- delta staging: the largest compressed delta, its decoded host buffer and its device copy;
- the runtime overhead of the profile (CUDA context, TensorRT/cuDNN or ONNX Runtime libraries).
"""

from __future__ import annotations

from typing import Dict, Optional

from ..errors import DeployError

MIB = 1024 * 1024
ACT_BYTES = {"int8": 1, "fp16": 2}


def estimate(bundle, profile: Dict, batch: Optional[int] = None) -> Dict:
    """Resident bytes per component, with the total and the profile's budget."""
    batch = int(batch or profile["max_batch"])
    layout = bundle.layout
    precision = profile["precision"] if profile["gpu"] else "fp32"
    wbytes = {"int8": 1, "fp16": 2, "fp32": 4}[precision]
    int8 = [t for t in layout.tensors if t.dtype == "int8"]
    floats = sum(t.nbytes for t in layout.tensors if t.dtype != "int8")
    engine_weights = sum(t.numel for t in int8) * wbytes + floats
    weights = engine_weights + 2 * layout.total_nbytes
    c_h_w = [int(d) for d in bundle.input["shape"]]
    pixels = c_h_w[-1] * c_h_w[-2] if len(c_h_w) >= 2 else 1
    widest = max([t.shape[0] for t in int8 if t.shape] + [c_h_w[0]])
    act = ACT_BYTES.get(precision, 4)
    per_image = 4 * _prod(c_h_w) + 2 * widest * pixels * act + 4 * bundle.head_width
    staging = max([int(d["stored_size"]) for d in bundle.deltas] + [0]) + 2 * layout.total_nbytes
    parts = {
        "weights": weights,
        "activations": batch * per_image,
        "workspace": int(profile["workspace_mb"]) * MIB,
        "delta_staging": staging,
        "runtime_overhead": int(profile["runtime_overhead_mb"]) * MIB,
    }
    return {
        "profile": profile["name"],
        "batch": batch,
        "precision": precision,
        "parts": parts,
        "total": sum(parts.values()),
        "budget": int(profile["memory_budget_mb"]) * MIB,
    }


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def describe(est: Dict) -> str:
    parts = ", ".join("{} {:.1f}".format(k.replace("_", " "), v / MIB) for k, v in est["parts"].items())
    return "{:.1f} MiB of {:.0f} MiB budget on {} at batch {} ({}; MiB: {})".format(
        est["total"] / MIB, est["budget"] / MIB, est["profile"], est["batch"], est["precision"], parts
    )


def check(bundle, profile: Dict, batch: Optional[int] = None, force: bool = False) -> Dict:
    """Estimate; raise DeployError with the numbers when it does not fit (unless *force*)."""
    est = estimate(bundle, profile, batch)
    est["fits"] = est["total"] <= est["budget"]
    if not est["fits"] and not force:
        raise DeployError(
            "bundle does not fit {}: needs {} (lower --batch, pick a larger device, or --force)".format(
                profile["name"], describe(est)
            )
        )
    return est
