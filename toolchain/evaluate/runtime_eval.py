"""Evaluate an exported bundle through the device runtime (ONNX Runtime backend)."""

from __future__ import annotations

import numpy as np

from edgetool.runtime.backends.ort import OrtBackend
from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.classifier import SuperSubClassifier


def evaluate_bundle(
    bundle_dir: str,
    x: np.ndarray,
    true_super: np.ndarray,
    true_local: np.ndarray,
    batch: int = 256,
    latency_images: int = 100,
) -> dict:
    """Accuracy of the efficient int8 Super-Sub via the runtime, plus per-image switch latency."""
    bundle = Bundle.open(bundle_dir)
    with OrtBackend(bundle) as be:
        ks, js = _predict(SuperSubClassifier(be, policy="batched"), x, batch)
        acc = float(((ks == true_super) & (js == true_local)).mean())
        sup_acc = float((ks == true_super).mean())
        batched_switches = be.switch_count
        # The paper's per-image policy: base, then subclass, for every image.
        be.timings.clear()
        clf_pi = SuperSubClassifier(be, policy="per-image")
        n = min(latency_images, len(x))
        clf_pi.classify(x[:n])
        timings = be.timings.summary()
    bundle.close()
    return {
        "accuracy": acc,
        "superclass_accuracy": sup_acc,
        "switches_batched": batched_switches,
        "per_image": {
            "images": n,
            "switch_ms": timings.get("switch", {}),
            "decode_ms": timings.get("decode", {}),
            "apply_ms": timings.get("apply", {}),
            "infer_ms": timings.get("infer", {}),
        },
    }


def evaluate_bundle_predictions(bundle_dir: str, x: np.ndarray, batch: int = 256, policy: str = "batched"):
    """(superclass, subclass) predictions of the runtime for every image (batched policy: top-1)."""
    bundle = Bundle.open(bundle_dir)
    with OrtBackend(bundle) as be:
        ks, js = _predict(SuperSubClassifier(be, policy=policy), x, batch)
    bundle.close()
    return ks, js


def _predict(clf, x: np.ndarray, batch: int):
    """(superclass, subclass) index arrays for every image, classified *batch* at a time."""
    preds = [p for i in range(0, len(x), batch) for p in clf.classify(x[i : i + batch])]
    return np.asarray([p.superclass for p in preds]), np.asarray([p.subclass for p in preds])
