"""The one set of measurements every report uses: bounds, Super-Sub accuracy, routing, storage x.

Definitions (docs/training.md, "How results are measured"):

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
* **gap closed**: (Super-Sub - lower) / (upper - lower), ``null`` with a reason when the bounds tie;
* **flat, equal budget** (``flat_budget``): the flat network trained for as many image passes as
  the whole Super-Sub pipeline spent (:func:`image_passes`), then QAT int8 like the base;
* **flat, equal cost** (``flat_wide``): a wider flat network whose FLOPs per image
  (:func:`flops_per_image`) are about those of one superclass plus one subclass inference, under
  the same budget rule, then QAT int8.  The verdict (:mod:`.verdict`) compares efficient int8
  Super-Sub with the better of the two.
"""

from __future__ import annotations

import functools
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..train import fit as training
from . import verdict
from .metrics import gap_closed


# Width multipliers the equal-cost control is chosen from (counted FLOPs, nothing trained).
WIDTHS = tuple(round(1.0 + 0.05 * i, 2) for i in range(41))  # 1.00 .. 3.00


def flops_per_image(model: torch.nn.Module, shape: Sequence[int]) -> int:
    """Floating-point operations of one image's forward pass: 2 x the multiply-accumulates of
    every convolution and fully connected layer (BatchNorm, ReLU, adds and pooling not counted)."""
    macs = [0]

    def conv(m, _inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs[0] += int(out[0].numel()) * k

    def linear(m, _inp, out):
        macs[0] += int(out[0].numel()) * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(linear))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(shape)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return 2 * macs[0]


def image_passes(run) -> Dict[str, int]:
    """Training image passes (epochs x images, forward and backward) of every Super-Sub stage,
    as ``train`` spends them; ``total`` sums them.  Calibration (forward only) is not counted."""
    cfg, n = run.cfg, len(run.ytr)
    ft = [run.fine_tune_size(k) for k in range(run.hier.n_super)]
    out = {
        "flat": cfg.epochs * n,
        "superclass": (cfg.base_epochs if cfg.base_init == "flat" else cfg.epochs) * n,
        "vanilla_subclass": cfg.ft_epochs * sum(ft),
        "qat_superclass": cfg.qat_epochs * n,
        "qat_subclass": cfg.ft_epochs * sum(ft),
    }
    out["total"] = sum(out.values())
    return out


def equal_budget_epochs(run) -> int:
    """Epochs of a flat control (fp32 epochs plus its QAT epochs) that match the Super-Sub
    pipeline's image passes, rounded up; never fewer than the flat network's own."""
    return max(run.cfg.epochs + run.cfg.qat_epochs, math.ceil(image_passes(run)["total"] / len(run.ytr)))


def equal_cost_width(run) -> float:
    """The width multiplier (from :data:`WIDTHS`) whose flat network's FLOPs per image come
    closest to one superclass plus one subclass inference."""

    shape, c, n = tuple(run.input_spec["shape"]), run.train.channels, len(run.train.classes)
    target = 2 * model_flops(run.cfg.arch, c, run.hier.head_width, run.cfg.width_mult, shape)
    return min(WIDTHS, key=lambda w: abs(model_flops(run.cfg.arch, c, n, run.cfg.width_mult * w, shape) - target))


@functools.lru_cache(maxsize=None)
def model_flops(arch: str, channels: int, head: int, width_mult: float, shape: tuple) -> int:
    """:func:`flops_per_image` of a freshly built network of this shape (counted once per shape)."""
    from ..train import models

    return flops_per_image(models.build(arch, channels, head, width_mult), shape)


def inference_flops(run) -> Dict[str, int]:
    """FLOPs per image of each row's inference: one flat network, a superclass plus one subclass
    network (top-1 routing), and the equal-cost control."""
    shape, c, n, w = tuple(run.input_spec["shape"]), run.train.channels, len(run.train.classes), run.cfg.width_mult
    one = model_flops(run.cfg.arch, c, run.hier.head_width, w, shape)
    flat = model_flops(run.cfg.arch, c, n, w, shape)
    wide = model_flops(run.cfg.arch, c, n, w * equal_cost_width(run), shape)
    return {"flat": flat, "super_sub": 2 * one, "flat_wide": wide}


def costs(run) -> Dict[str, dict]:
    """Per report row: the training image passes behind it and its inference FLOPs per image."""
    p, f = image_passes(run), inference_flops(run)
    control = equal_budget_epochs(run) * len(run.ytr)
    chain = p["flat"] + p["superclass"]
    rows = {
        "lower": (p["flat"], f["flat"]),
        "control": (p["flat"], f["flat"]),
        "upper": (chain + p["vanilla_subclass"], f["super_sub"] // 2),
        "vanilla": (chain + p["vanilla_subclass"], f["super_sub"]),
        "efficient": (chain + p["qat_superclass"] + p["qat_subclass"], f["super_sub"]),
        "flat_budget": (control, f["flat"]),
        "flat_wide": (control, f["flat_wide"]),
    }
    n, val = len(run.ytr), len(run.data.val.labels) if run.data.val is not None else 0
    out: Dict[str, dict] = {
        k: {"image_passes": a, "flops_per_image": b, "labelled_images": n} for k, (a, b) in rows.items()
    }
    out["efficient"]["labelled_images"] = n + val  # its routing is chosen (a router fit) on the validation split
    out["pipeline"] = {
        "image_passes": p,
        "control_epochs": equal_budget_epochs(run),
        "control_width": equal_cost_width(run),
        "definition": "image passes: training epochs x images per stage; the controls get the whole pipeline's total",
    }
    return out


def storage_x(manifest: dict) -> List[float]:
    """x per superclass: stored delta bytes / stored bytes of one int8 network (base.onnx)."""
    base = float(manifest["base"]["size"])
    return [d["stored_size"] / base for d in manifest["deltas"]]


def same_codec_x(bundle_dir: str, manifest: dict) -> dict:
    """x with base.onnx under the deltas' codec too: stored delta bytes / compressed base.onnx bytes
    (the definition of x in docs/training.md; the plain ratio divides by the uncompressed base.onnx)."""
    import os

    from edgetool.runtime.bundle import codecs

    codec = manifest["deltas"][0]["codec"]
    with open(os.path.join(bundle_dir, manifest["base"]["file"]), "rb") as f:
        base = len(codecs.encode(codec, f.read()))
    xs = [d["stored_size"] / base for d in manifest["deltas"]]
    return {"codec": codec, "base_stored": base, "mean": float(np.mean(xs)), "per_superclass": xs}


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


def control_validation(run, nets: Optional[dict] = None) -> Dict[str, float]:
    """Each int8 flat control's accuracy on the validation split ({} without one): what the
    verdict chooses the better control by.  Reads no test image.  *nets*: the controls by kind,
    when the caller holds them already."""
    if run.data.val is None:
        return {}
    nets = nets or {kind: run.flat_control(kind) for kind in verdict.KINDS}
    xv, yv = training.to_tensor(run.data.val, run.mean, run.std), np.asarray(run.data.val.labels)
    return {
        "flat_" + k: float((training.predict_logits(n, xv).argmax(1).numpy() == yv).mean()) for k, n in nets.items()
    }


def efficient(run, bundle_dir: Optional[str], true_k: np.ndarray):
    """(per-image correctness, superclass accuracy of the int8 base, how it was measured) of
    efficient int8 Super-Sub: the bundle through ONNX Runtime, else the QAT networks in torch."""
    y = run.yte.numpy()
    if bundle_dir is not None:
        from .runtime_eval import evaluate_bundle_predictions

        ks, js = evaluate_bundle_predictions(bundle_dir, run.xte.numpy())
        members = run.hier.members(run.train.classes)
        ok = np.array([members[k][j] for k, j in zip(ks, js)], dtype=np.int64) == y
        return ok, float((ks == true_k).mean()), "runtime (ONNX Runtime on the bundle)"
    qroute = training.predict_logits(run.super_qat(), run.xte, run.hier.n_super).argmax(1).numpy()
    ok = two_stage(run, [run.sub_qat(k) for k in range(run.hier.n_super)], qroute)
    return ok, float((qroute == true_k).mean()), "torch (QAT networks)"


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
    correct["efficient"], routing["base_int8"], source = efficient(run, bundle_dir, true_k)
    nets = {kind: run.flat_control(kind) for kind in verdict.KINDS}
    validation = control_validation(run, nets)  # the choice between the controls, before any test image
    for kind, net in nets.items():
        correct["flat_" + kind] = training.predict_logits(net, run.xte).argmax(1).numpy() == y
    acc = {k: float(v.mean()) for k, v in correct.items()}
    controls: Dict[str, Sequence[np.ndarray]] = {k: [correct[k]] for k in verdict.CONTROLS}
    out = {
        "accuracy": acc,
        "routing": routing,
        "correct": correct,
        "route": route,
        "gap_closed": {k: gap_closed(acc[k], acc["lower"], acc["upper"]) for k in ("vanilla", "efficient", "control")},
        "efficient_measured_with": source,
        "base_init": run.cfg.base_init,
        "delta_budget": str(run.cfg.delta_budget),
        "cost": costs(run),
        "verdict": verdict.decide([correct["efficient"]], controls, validation or None, run.path),
    }
    if manifest is not None:
        xs = storage_x(manifest)
        out["x"] = {
            "per_superclass": dict(zip(run.hier.superclasses, xs)),
            "mean": float(np.mean(xs)),
            "definition": "stored delta bytes / stored bytes of base.onnx",
        }
        if bundle_dir is not None:
            out["x"]["same_codec"] = same_codec_x(bundle_dir, manifest)
    return out


def summary(m: dict) -> dict:
    """The JSON-ready part of :func:`measure` (no per-image arrays)."""
    return {k: v for k, v in m.items() if k not in ("correct", "route")}
