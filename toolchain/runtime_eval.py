"""Evaluate an exported bundle through the device runtime (ONNX Runtime backend)."""
from __future__ import annotations

import numpy as np

from edgetool.runtime.backends.ort import OrtBackend
from edgetool.runtime.bundle import Bundle
from edgetool.runtime.classifier import SuperSubClassifier


def evaluate_bundle(bundle_dir: str, x: np.ndarray, true_super: np.ndarray, true_local: np.ndarray,
                    batch: int = 256, latency_images: int = 100) -> dict:
    """Accuracy of the efficient int8 Super-Sub via the runtime, plus per-image switch latency."""
    bundle = Bundle.open(bundle_dir)
    with OrtBackend(bundle) as be:
        clf = SuperSubClassifier(be, policy="batched")
        ks, js = [], []
        for i in range(0, len(x), batch):
            for p in clf.classify(x[i:i + batch]):
                ks.append(p.superclass)
                js.append(p.subclass)
        ks, js = np.asarray(ks), np.asarray(js)
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
    return {"accuracy": acc, "superclass_accuracy": sup_acc, "switches_batched": batched_switches,
            "per_image": {"images": n, "switch_ms": timings.get("switch", {}), "decode_ms": timings.get("decode", {}),
                          "apply_ms": timings.get("apply", {}), "infer_ms": timings.get("infer", {})}}


def evaluate_bundle_predictions(bundle_dir: str, x: np.ndarray, batch: int = 256):
    """(superclass, subclass) predictions of the runtime for every image (batched policy)."""
    bundle = Bundle.open(bundle_dir)
    ks, js = [], []
    with OrtBackend(bundle) as be:
        clf = SuperSubClassifier(be, policy="batched")
        for i in range(0, len(x), batch):
            for p in clf.classify(x[i:i + batch]):
                ks.append(p.superclass)
                js.append(p.subclass)
    bundle.close()
    return np.asarray(ks), np.asarray(js)
