"""What the classifier predicts for one image, and the masked softmax its stages use."""

from __future__ import annotations

import numpy as np


def masked_softmax(logits: np.ndarray, n_valid: int) -> np.ndarray:
    """Softmax over the first *n_valid* logits of each row (the rest of the head is masked)."""
    z = logits[..., :n_valid].astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class Prediction:
    """What the classifier predicts for one image: superclass, fine class (``label``), confidences.

    ``to_dict`` names the predicted fine class ``class``; nothing here is ground truth.
    """

    __slots__ = ("superclass", "superclass_name", "subclass", "label", "p_super", "p_sub")

    def __init__(self, superclass, superclass_name, subclass, label, p_super, p_sub):
        self.superclass = superclass
        self.superclass_name = superclass_name
        self.subclass = subclass
        self.label = label
        self.p_super = float(p_super)
        self.p_sub = float(p_sub)

    @property
    def confidence(self) -> float:
        return self.p_super * self.p_sub

    def to_dict(self) -> dict:
        return {
            "superclass": self.superclass_name,
            "class": self.label,
            "confidence": self.confidence,
            "p_super": self.p_super,
            "p_sub": self.p_sub,
            "superclass_index": self.superclass,
            "subclass_index": self.subclass,
        }

    def __repr__(self):
        return "Prediction({}/{}, {:.3f})".format(self.superclass_name, self.label, self.confidence)


def of_class(bundle, k: int, j: int, p_super: float, p_sub: float) -> Prediction:
    """The prediction of class *j* of superclass *k*, chosen by the policy (not the argmax of a row)."""
    s = bundle.superclasses[k]
    return Prediction(k, s.name, j, s.subclasses[j], p_super, p_sub)
