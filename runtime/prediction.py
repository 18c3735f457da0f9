"""What the classifier predicts for one image, and the masked softmax its stages use."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np


def masked_softmax(logits: np.ndarray, n_valid: int) -> np.ndarray:
    """Softmax over the first *n_valid* logits of each row (the rest of the head is masked)."""
    z = logits[..., :n_valid].astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class Prediction:
    """What the classifier predicts for one image: superclass, fine class (``label``), confidences.

    ``to_dict`` names the predicted fine class ``class``; nothing here is ground truth.  ``scores``
    (optional): what the network that made the prediction gave every class it scored, for :meth:`top`.
    """

    __slots__ = ("superclass", "superclass_name", "subclass", "label", "p_super", "p_sub", "scores")

    def __init__(self, superclass, superclass_name, subclass, label, p_super, p_sub, scores: Optional[Scores] = None):
        self.superclass = superclass
        self.superclass_name = superclass_name
        self.subclass = subclass
        self.label = label
        self.p_super = float(p_super)
        self.p_sub = float(p_sub)
        self.scores = scores

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

    def top(self, n: int) -> List[dict]:
        """Up to *n* classes as ``{"class", "confidence"}``: the prediction first, then the other classes
        the network that made it scored, most confident first.  The confidence is the prediction's kind:
        p_super x p_sub of each class of the subclass network that ran (a Super-Sub bundle scores
        only the routed superclass's classes), or a flat bundle's class probability.  A prediction
        without a fine class (superclass only) has none."""
        if n < 1 or self.label is None:
            return []
        out = [{"class": self.label, "confidence": self.confidence}]
        if self.scores is None:
            return out
        names, probs, scale, chosen = self.scores
        conf = np.asarray(probs, dtype=np.float64) * scale
        for i in np.argsort(-conf, kind="stable")[: n + 1]:
            if len(out) < n and int(i) != chosen:
                out.append({"class": names[int(i)], "confidence": float(conf[i])})
        return out

    def __repr__(self):
        return "Prediction({}/{}, {:.3f})".format(self.superclass_name, self.label, self.confidence)


# (class names, each one's probability, the factor that makes it a confidence, the predicted class's index)
Scores = Tuple[Sequence[str], np.ndarray, float, int]


def of_class(bundle, k: int, j: int, p_super: float, p_sub: float, probs: Optional[np.ndarray] = None) -> Prediction:
    """The prediction of class *j* of superclass *k*, chosen by the policy (not the argmax of a row);
    *probs*: subclass network *k*'s probabilities of all its classes (for :meth:`Prediction.top`)."""
    s = bundle.superclasses[k]
    scores = None if probs is None else (s.subclasses, probs, float(p_super), j)
    return Prediction(k, s.name, j, s.subclasses[j], p_super, p_sub, scores)
