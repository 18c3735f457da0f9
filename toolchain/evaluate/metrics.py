"""Pure report arithmetic (no torch): confusion matrices, per-superclass accuracy, gap closed."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


def confusion_matrix(true: Sequence[int], pred: Sequence[int], n: int) -> np.ndarray:
    """Counts: rows = actual class, columns = predicted class."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return m


def row_percent(m: np.ndarray) -> np.ndarray:
    rows = m.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(100.0 * m, rows, out=np.zeros(m.shape, dtype=np.float64), where=rows > 0)


def per_group_accuracy(correct: Sequence[bool], group: Sequence[int], n: int) -> List[Optional[float]]:
    """Accuracy within each group; ``None`` (JSON null, never NaN) for a group without test images."""
    correct_arr = np.asarray(correct, dtype=bool)
    group_arr = np.asarray(group)
    return [float(correct_arr[group_arr == k].mean()) if np.any(group_arr == k) else None for k in range(n)]


def gap_closed(value: float, lower: float, upper: float) -> Dict[str, object]:
    """(value - lower) / (upper - lower) as {"value", "reason"}: ``None`` with a reason when the bounds tie."""
    if not upper > lower:
        return {
            "value": None,
            "reason": "the upper bound ({:.2%}) does not exceed the lower bound ({:.2%})".format(upper, lower),
        }
    return {"value": (value - lower) / (upper - lower), "reason": None}


def signed_int8(delta_u8: np.ndarray) -> np.ndarray:
    """uint8 delta codes as the signed step they encode (-128..127)."""
    return delta_u8.view(np.int8)
