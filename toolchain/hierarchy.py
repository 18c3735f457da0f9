"""Class hierarchies: superclasses, each with its subclass (fine class) names.

The JSON file format::

    {"superclasses": [{"name": "tops", "subclasses": ["T-shirt/top", "Pullover"]}, ...]}

The CIFAR-style form ``{"fine_label_names", "coarse_label_names", "fine_to_coarse"}`` is
read as well.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from edgetool.runtime.errors import UsageError


@dataclass
class Hierarchy:
    superclasses: List[str]
    subclasses: List[List[str]]

    @property
    def n_super(self) -> int:
        return len(self.superclasses)

    @property
    def head_width(self) -> int:
        """H = max(N, largest subclass count): one head shape for every network."""
        return max([self.n_super] + [len(s) for s in self.subclasses])

    def to_dict(self) -> dict:
        return {
            "superclasses": [{"name": n, "subclasses": list(s)} for n, s in zip(self.superclasses, self.subclasses)]
        }

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    def mapping(self, classes: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """For each dataset class index: (superclass index, index within the superclass)."""
        where: Dict[str, Tuple[int, int]] = {}
        for k, subs in enumerate(self.subclasses):
            for j, c in enumerate(subs):
                where[c] = (k, j)
        missing = [c for c in classes if c not in where]
        if missing:
            raise UsageError("classes not in the hierarchy: {}".format(", ".join(missing)))
        unknown = [c for c in where if c not in set(classes)]
        if unknown:
            raise UsageError(
                "the hierarchy names classes that are not in the data: {}".format(
                    ", ".join(ascii(c) for c in unknown[:10])
                )
            )
        sup = np.array([where[c][0] for c in classes], dtype=np.int64)
        loc = np.array([where[c][1] for c in classes], dtype=np.int64)
        return sup, loc


def from_dict(d: dict, source: str = "hierarchy") -> Hierarchy:
    try:
        if "superclasses" in d:
            names = [s["name"] for s in d["superclasses"]]
            subs = [list(s["subclasses"]) for s in d["superclasses"]]
        elif "fine_to_coarse" in d:
            names = list(d["coarse_label_names"])
            subs = [[] for _ in names]
            for fine, coarse in zip(d["fine_label_names"], d["fine_to_coarse"]):
                subs[int(coarse)].append(fine)
        else:
            raise KeyError("superclasses")
    except (KeyError, TypeError, IndexError) as exc:
        raise UsageError("{}: not a hierarchy file (missing {})".format(source, exc)) from None
    _check_names(names, subs, source)
    seen = set()
    for s in subs:
        if not s:
            raise UsageError("{}: a superclass has no subclasses".format(source))
        for c in s:
            if c in seen:
                raise UsageError("{}: class {!r} is in two superclasses".format(source, c))
            seen.add(c)
    if len(set(names)) != len(names):
        raise UsageError("{}: duplicate superclass names".format(source))
    return Hierarchy(names, subs)


def _check_names(names, subs, source: str) -> None:
    """Superclass names become file names and are printed: printable single path components, unique."""
    from edgetool.runtime import names as N

    try:
        for i, n in enumerate(names):
            N.name(n, "superclass {}".format(i))
        N.unique(names, "superclasses")
        for i, s in enumerate(subs):
            for j, c in enumerate(s):
                N.label(c, "superclass {} class {}".format(i, j))
    except N.FieldError as exc:
        raise UsageError("{}: {}".format(source, exc)) from None


def load(path: str) -> Hierarchy:
    if not os.path.isfile(path):
        raise UsageError("{}: no such hierarchy file".format(path))
    try:
        with open(path) as f:
            d = json.load(f)
    except ValueError as exc:
        raise UsageError("{}: not valid JSON ({})".format(path, exc)) from None
    return from_dict(d, path)
