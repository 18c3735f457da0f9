"""The one set of measurements every report uses: bounds, Super-Sub accuracy, routing, storage x.

Definitions (README, "How results are measured"):

* **lower bound**: the flat network over all fine classes;
* **upper bound**: the vanilla subclass networks (fine-tuned from the same base as the
  efficient ones), each given the true superclass;
* **control**: the flat network restricted to the classes of the true superclass, i.e. what
  knowing the superclass is worth without any subclass network;
* **vanilla**: superclass network routes, vanilla fp32 subclass networks classify;
* **efficient**: the exported int8 bundle through the runtime (ONNX Runtime);
* **routing**: superclass accuracy of the base network (fp32, and int8 through the runtime),
  and of the flat network's implied superclass (the superclass holding the most probability);
* **x**: stored delta bytes (int8 codes and float leftovers, compressed, as in the bundle)
  divided by the stored bytes of one int8 network (``base.onnx``);
* **gap closed**: (Super-Sub - lower) / (upper - lower), ``null`` with a reason when the bounds tie.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

from . import train as training
from .report import gap_closed


def storage_x(manifest: dict) -> List[float]:
    """x per superclass: stored delta bytes / stored bytes of one int8 network (base.onnx)."""
    base = float(manifest["base"]["size"])
    return [d["stored_size"] / base for d in manifest["deltas"]]


def flat_routing(logits: torch.Tensor, sup_of: np.ndarray, n_super: int) -> np.ndarray:
    """The flat network's implied superclass: the superclass whose classes hold the most probability."""
    p = torch.softmax(logits.float(), 1).numpy()
    sums = np.stack([p[:, sup_of == k].sum(1) for k in range(n_super)], 1)
    return sums.argmax(1)


def restricted_to_true_superclass(logits: torch.Tensor, sup_of: np.ndarray, true_k: np.ndarray) -> np.ndarray:
    """Argmax of the flat logits over the classes of each image's true superclass."""
    lg = logits.float().numpy().copy()
    outside = sup_of[None, :] != true_k[:, None]
    lg[outside] = -np.inf
    return lg.argmax(1)


def two_stage(run, nets, ks: np.ndarray) -> np.ndarray:
    """Per-image correctness when superclass *ks* routes to subclass networks *nets*."""
    y = run.yte.numpy()
    members = run.hier.members(run.train.classes)  # subclass output -> dataset class (shared classes too)
    ok = np.zeros(len(y), dtype=bool)
    for k in range(run.hier.n_super):
        idx = np.nonzero(ks == k)[0]
        if len(idx):
            j = training.predict_logits(nets[k], run.xte[idx], len(run.hier.subclasses[k])).argmax(1).numpy()
            ok[idx] = members[k][j] == y[idx]
    return ok


def measure(run, bundle_dir: Optional[str], manifest: Optional[dict] = None) -> dict:
    """Every figure of the reports for one run (and its exported bundle).

    Returns {"accuracy", "routing", "gap_closed", "x", "correct" (per-image bool arrays),
    "route" (superclass chosen per image by the base network), "efficient_measured_with"}.
    """
    y = run.yte.numpy()
    true_k = run.sup_of[y]
    N = run.hier.n_super
    flat_logits = training.predict_logits(run.flat(), run.xte)
    correct = {
        "lower": flat_logits.argmax(1).numpy() == y,
        "control": restricted_to_true_superclass(flat_logits, run.sup_of, true_k) == y,
    }
    route = training.predict_logits(run.superclass(), run.xte, N).argmax(1).numpy()
    vanilla = [run.vanilla(k) for k in range(N)]
    correct["upper"] = two_stage(run, vanilla, true_k)
    correct["vanilla"] = two_stage(run, vanilla, route)
    routing = {
        "base_fp32": float((route == true_k).mean()),
        "flat": float((flat_routing(flat_logits, run.sup_of, N) == true_k).mean()),
    }
    if bundle_dir is not None:
        from .runtime_eval import evaluate_bundle_predictions

        ks, js = evaluate_bundle_predictions(bundle_dir, run.xte.numpy())
        members = run.hier.members(run.train.classes)
        correct["efficient"] = np.array([members[k][j] for k, j in zip(ks, js)], dtype=np.int64) == y
        routing["base_int8"] = float((ks == true_k).mean())
        source = "runtime (ONNX Runtime on the bundle)"
    else:
        base = run.super_qat()
        qroute = training.predict_logits(base, run.xte, N).argmax(1).numpy()
        correct["efficient"] = two_stage(run, [run.sub_qat(k) for k in range(N)], qroute)
        routing["base_int8"] = float((qroute == true_k).mean())
        source = "torch (QAT networks)"
    acc = {k: float(v.mean()) for k, v in correct.items()}
    out = {
        "accuracy": acc,
        "routing": routing,
        "correct": correct,
        "route": route,
        "gap_closed": {k: gap_closed(acc[k], acc["lower"], acc["upper"]) for k in ("vanilla", "efficient", "control")},
        "efficient_measured_with": source,
        "base_init": run.cfg.base_init,
        "delta_budget": str(run.cfg.delta_budget),
    }
    if manifest is not None:
        xs = storage_x(manifest)
        out["x"] = {
            "per_superclass": dict(zip(run.hier.superclasses, xs)),
            "mean": float(np.mean(xs)),
            "definition": "stored delta bytes / stored bytes of base.onnx",
        }
    return out


def summary(m: dict) -> dict:
    """The JSON-ready part of :func:`measure` (no per-image arrays)."""
    return {k: v for k, v in m.items() if k not in ("correct", "route")}
