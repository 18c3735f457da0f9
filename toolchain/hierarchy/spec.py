"""Class hierarchies: superclasses, each with its subclass (fine class) names.

The JSON file format::

    {"superclasses": [{"name": "tops", "subclasses": ["T-shirt/top", "Pullover"]}, ...]}

The CIFAR-style form ``{"fine_label_names", "coarse_label_names", "fine_to_coarse"}`` is
read as well.

Overlapping clusters (a learned hierarchy, ``edgetool hierarchy learn --gamma``): a class may
also be listed in other superclasses, each time in that superclass's ``"overlap"`` list::

    {"name": "c1", "subclasses": ["Shirt", "Coat", "T-shirt/top"], "overlap": ["T-shirt/top"]}

Every class has exactly one *primary* superclass (where it is not in ``overlap``): the
superclass network is trained on primary labels, and every subclass network on all its
``subclasses``.  A file without ``overlap`` lists is read exactly as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from edgetool.runtime.errors import UsageError


@dataclass
class Hierarchy:
    superclasses: List[str]
    subclasses: List[List[str]]
    overlap: List[List[str]] = field(default_factory=list)  # per superclass: members whose primary is elsewhere
    # each subclass network has one more head row after its classes, "not mine" (ft_not_mine)
    not_mine: bool = False

    def __post_init__(self):
        if not self.overlap:
            self.overlap = [[] for _ in self.superclasses]

    @property
    def overlapping(self) -> bool:
        return any(self.overlap)

    @property
    def n_super(self) -> int:
        return len(self.superclasses)

    @property
    def head_width(self) -> int:
        """H = max(N, largest subclass count, plus the "not mine" row): one head shape for every network."""
        return max([self.n_super] + [self.outputs(k) for k in range(self.n_super)])

    def outputs(self, k: int) -> int:
        """The head rows subclass network *k* trains: its classes, and "not mine" if there is one."""
        return len(self.subclasses[k]) + int(self.not_mine)

    def to_dict(self) -> dict:
        out = []
        for n, s, o in zip(self.superclasses, self.subclasses, self.overlap):
            d = {"name": n, "subclasses": list(s)}
            if o:
                d["overlap"] = list(o)
            out.append(d)
        return {"superclasses": out}

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    def mapping(self, classes: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """For each dataset class index: (superclass index, index within the superclass)."""
        where: Dict[str, Tuple[int, int]] = {}
        for k, subs in enumerate(self.subclasses):
            for j, c in enumerate(subs):
                if c not in self.overlap[k]:
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

    def members(self, classes: Sequence[str]) -> List[np.ndarray]:
        """Per superclass: the dataset class index of each of its subclass network's outputs."""
        index = {c: i for i, c in enumerate(classes)}
        return [np.array([index[c] for c in subs], dtype=np.int64) for subs in self.subclasses]

    def local_index(self, classes: Sequence[str]) -> np.ndarray:
        """(N, n_classes): output of subclass network k that is dataset class c, or -1 (not a member)."""
        out = np.full((self.n_super, len(classes)), -1, dtype=np.int64)
        for k, m in enumerate(self.members(classes)):
            out[k, m] = np.arange(len(m))
        return out


def from_dict(d: dict, source: str = "hierarchy") -> Hierarchy:
    try:
        if "superclasses" in d:
            names = [s["name"] for s in d["superclasses"]]
            subs = [list(s["subclasses"]) for s in d["superclasses"]]
            over = [list(s.get("overlap", [])) for s in d["superclasses"]]
        elif "fine_to_coarse" in d:
            names = list(d["coarse_label_names"])
            subs = [[] for _ in names]
            over = [[] for _ in names]
            for fine, coarse in zip(d["fine_label_names"], d["fine_to_coarse"]):
                subs[int(coarse)].append(fine)
        else:
            raise KeyError("superclasses")
    except (KeyError, TypeError, IndexError) as exc:
        raise UsageError("{}: not a hierarchy file (missing {})".format(source, exc)) from None
    _check_names(names, subs, source)
    _check_membership(subs, over, source)
    if len(set(names)) != len(names):
        raise UsageError("{}: duplicate superclass names".format(source))
    return Hierarchy(names, subs, over)


def _check_membership(subs, over, source: str) -> None:
    """Each class is primary in exactly one superclass; overlap lists name members only."""
    primary: Dict[str, int] = {}
    for k, (s, o) in enumerate(zip(subs, over)):
        if not s:
            raise UsageError("{}: a superclass has no subclasses".format(source))
        if len(set(s)) != len(s):
            raise UsageError("{}: superclass {} lists a class twice".format(source, k))
        if not isinstance(o, list) or any(c not in s for c in o):
            raise UsageError("{}: superclass {}: every overlap class must be one of its subclasses".format(source, k))
        for c in s:
            if c in o:
                continue
            if c in primary:
                raise UsageError(
                    '{}: class {!r} is in two superclasses (list it in the other\'s "overlap" to share it)'.format(
                        source, c
                    )
                )
            primary[c] = k
    orphans = sorted({c for o in over for c in o} - set(primary))
    if orphans:
        raise UsageError(
            "{}: class {!r} is only in overlap lists; it needs one primary superclass".format(source, orphans[0])
        )


def _check_names(names, subs, source: str) -> None:
    """Superclass names become file names and are printed: printable single path components, unique."""
    from edgetool.runtime.bundle import names as N

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
    from ..config_check import read_json

    return from_dict(read_json(path, "hierarchy file"), path)
