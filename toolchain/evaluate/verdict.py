"""Does Super-Sub pay off?  Efficient int8 Super-Sub against the better flat control, with a
paired bootstrap interval over the test images (pooled across seeds, resampled within each).

The better control is chosen on the validation split where the run has one; without one it is
the better of the two on the test split, which can only favour the flat network.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from edgetool.runtime.choices import FLAT_CONTROLS
from edgetool.runtime import commands

CONTROLS = {"flat_" + kind: model for model, kind in FLAT_CONTROLS.items()}  # report row -> export --model
KINDS = tuple(FLAT_CONTROLS.values())  # the flat controls: "budget", "wide"
LEVEL = 0.95
RESAMPLES = 4000


def paired_interval(a: Sequence[np.ndarray], b: Sequence[np.ndarray], resamples: int = RESAMPLES, seed: int = 0):
    """(mean of a - b over every image, low, high): a percentile bootstrap of the paired
    per-image differences, resampled within each seed's test set and pooled."""
    diffs = [np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64) for x, y in zip(a, b)]
    if not diffs or any(len(d) == 0 for d in diffs) or any(len(x) != len(y) for x, y in zip(a, b)):
        raise ValueError("paired predictions of equal, non-zero length are needed")
    total = sum(len(d) for d in diffs)
    rng = np.random.default_rng(seed)
    boots = np.zeros(resamples)
    for d in diffs:
        idx = rng.integers(0, len(d), size=(resamples, len(d)))
        boots += d[idx].sum(1)
    boots /= total
    tail = (1.0 - LEVEL) / 2
    mean = float(sum(d.sum() for d in diffs) / total)
    return mean, float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail))


def decide(
    efficient: Sequence[np.ndarray],
    controls: Dict[str, Sequence[np.ndarray]],
    validation: Optional[Dict[str, float]] = None,
    run: str = "RUN",
) -> dict:
    """The verdict: *efficient* and each control's per-image correctness (a list over seeds);
    *validation*: each control's validation accuracy, which picks the better control."""
    if validation:
        best = max(sorted(controls), key=lambda k: validation[k])
        scores = ", ".join("{} {:.2%}".format(k, validation[k]) for k in sorted(controls))
        chosen_on = "validation split ({})".format(scores)
    else:
        best = max(sorted(controls), key=lambda k: float(np.mean(np.concatenate(controls[k]))))
        chosen_on = "test split (the run has no validation split; this choice can only favour the flat network)"
    diff, lo, hi = paired_interval(efficient, controls[best])
    pays = lo > 0
    numbers = "efficient - best flat control ({}) = {:+.2f} points (95% CI [{:+.2f}, {:+.2f}])".format(
        best, 100 * diff, 100 * lo, 100 * hi
    )
    command = commands.export_model(run, CONTROLS[best])
    if pays:
        message = "Super-Sub pays off on this data: " + numbers
    else:
        message = "The flat network is as good or better here ({}): ship it with `{}`".format(numbers, command)
    return {
        "pays_off": bool(pays),
        "best_control": best,
        "chosen_on": chosen_on,
        "validation": dict(validation) if validation else None,
        "difference": diff,
        "ci95": [lo, hi],
        "seeds": len(efficient),
        "test_images": int(sum(len(e) for e in efficient)),
        "message": message,
        "command": None if pays else command,
    }
