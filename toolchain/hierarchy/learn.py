"""Learn a class hierarchy from a confusion matrix (Chennupati et al., Algorithm 1).

1. distance ``D = 1 - C`` with ``C`` row-normalised (rows: true class), made symmetric,
   zero diagonal;
2. UPGMA (average) linkage, SciPy's ``scipy.cluster.hierarchy.linkage``;
3. top-down division: starting from one cluster of every class, the cluster joined at the
   highest linkage distance that still holds more than ``theta`` classes is split into its
   two children, until no cluster holds more than ``theta`` classes; then clusters under
   ``min_size`` classes join their nearest cluster where the union stays within ``theta``
   (UPGMA chains: the division alone peels off many single classes);
4. optional overlap: with ``DCN`` the column-normalised confusion (``DCN[i, j]`` = P(true i |
   predicted j)), class ``j`` outside cluster ``Q`` joins ``Q`` when ``DCN[i, j] >= 1 / (gamma K)``
   for some class ``i`` of ``Q`` (``K`` classes).  It stays *primary* in its own cluster.
"""

from __future__ import annotations

import json
import os
from typing import Callable, List, Optional, Sequence, Tuple, cast

import numpy as np

from edgetool.runtime.errors import UsageError

from .spec import Hierarchy


def check_confusion(c, source: str = "confusion matrix") -> np.ndarray:
    """A K x K (K >= 2) matrix of finite, non-negative counts or rates, every row non-zero."""
    try:
        c = np.asarray(c, dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError("{}: not a numeric matrix".format(source)) from None
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise UsageError("{}: a confusion matrix is square, got shape {}".format(source, c.shape))
    if c.shape[0] < 2:
        raise UsageError("{}: needs at least 2 classes".format(source))
    if not np.isfinite(c).all():
        raise UsageError("{}: holds NaN or infinite entries".format(source))
    if (c < 0).any():
        raise UsageError("{}: holds negative entries".format(source))
    empty = np.nonzero(c.sum(1) == 0)[0]
    if len(empty):
        raise UsageError("{}: row {} (true class) is all zero".format(source, int(empty[0])))
    return c


def distance(c: np.ndarray) -> np.ndarray:
    """D = 1 - row-normalised C, symmetric, zero diagonal, in [0, 1]."""
    r = c / c.sum(1, keepdims=True)
    d = 1.0 - r
    d = (d + d.T) / 2.0
    np.fill_diagonal(d, 0.0)
    return np.clip(d, 0.0, 1.0)


def off_diagonal_share(c: np.ndarray) -> float:
    """How much the network confuses: the mean over classes of the share of a row off the diagonal
    (1 - per-class accuracy).  Near 0 the distances are all near 1 and the clusters follow noise."""
    c = np.asarray(c, dtype=np.float64)
    rows = c.sum(axis=1)
    return float(np.mean(1.0 - np.diag(c) / np.where(rows > 0, rows, 1.0)))


def upgma(d: np.ndarray) -> np.ndarray:
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    return linkage(squareform(d, checks=False), method="average")


def divide(z: np.ndarray, k: int, theta: int) -> List[List[int]]:
    """Top-down division of linkage *z* over *k* leaves: split the highest oversize cluster until
    every cluster holds at most *theta* classes.  Clusters come in dendrogram leaf order."""
    from scipy.cluster.hierarchy import leaves_list, to_tree

    root = to_tree(z)
    clusters = [root]
    while True:
        big = [n for n in clusters if n.get_count() > theta]
        if not big:
            break
        top = max(big, key=lambda n: n.dist)
        i = clusters.index(top)
        clusters[i : i + 1] = [top.get_left(), top.get_right()]
    order = {leaf: pos for pos, leaf in enumerate(leaves_list(z))}
    out = [sorted(n.pre_order(), key=cast(Callable[[int], int], order.get)) for n in clusters]
    return sorted(out, key=lambda m: order[m[0]])


def pack(d: np.ndarray, clusters: List[List[int]], theta: int, min_size: int) -> List[List[int]]:
    """Clusters under *min_size* classes (UPGMA's chaining leaves singletons) join the nearest cluster
    by average distance whose union stays within *theta*; the smallest goes first."""
    out = [list(q) for q in clusters]
    stuck: set = set()
    while True:
        small = [i for i, q in enumerate(out) if len(q) < min_size and tuple(q) not in stuck]
        if not small:
            return out
        i = min(small, key=lambda j: len(out[j]))
        fits = [j for j, q in enumerate(out) if j != i and len(q) + len(out[i]) <= theta]
        if not fits:
            stuck.add(tuple(out[i]))
            continue
        j = min(fits, key=lambda j: d[np.ix_(out[i], out[j])].mean())
        out[j] = out[j] + out[i]
        del out[i]


def overlap(c: np.ndarray, clusters: Sequence[Sequence[int]], gamma: float) -> List[List[int]]:
    """Per cluster: the classes outside it that join it (Chennupati et al., equation 1)."""
    col = c.sum(0, keepdims=True)
    dcn = np.divide(c, col, out=np.zeros_like(c), where=col > 0)
    thr = 1.0 / (gamma * c.shape[0])
    out = []
    for q in clusters:
        inside = set(q)
        out.append([j for j in range(c.shape[0]) if j not in inside and dcn[list(q), j].max() >= thr])
    return out


def learn(
    c,
    classes: Sequence[str],
    theta: int,
    gamma: Optional[float] = None,
    min_size: Optional[int] = None,
    prefix: str = "c",
) -> Tuple[Hierarchy, np.ndarray]:
    """(hierarchy, linkage) learned from confusion matrix *c* (rows: true class) over *classes*;
    *min_size* (default ceil(theta / 2); 1: off) packs small clusters, see :func:`pack`."""
    c = check_confusion(c)
    if len(classes) != c.shape[0]:
        raise UsageError("{} class names for a {}-class confusion matrix".format(len(classes), c.shape[0]))
    if theta < 1:
        raise UsageError("theta (the cluster size cap) must be >= 1, got {}".format(theta))
    if gamma is not None and not (np.isfinite(gamma) and gamma > 0):
        raise UsageError("gamma (the overlap factor) must be a positive number, got {}".format(gamma))
    min_size = (theta + 1) // 2 if min_size is None else min_size
    if min_size < 1:
        raise UsageError("the minimum cluster size must be >= 1, got {}".format(min_size))
    d = distance(c)
    z = upgma(d)
    clusters = pack(d, divide(z, c.shape[0], theta), theta, min_size)
    order = {leaf: pos for pos, leaf in enumerate(_leaves(z))}
    clusters = sorted(
        (sorted(q, key=cast(Callable[[int], int], order.get)) for q in clusters), key=lambda q: order[q[0]]
    )
    extra = overlap(c, clusters, gamma) if gamma is not None else [[] for _ in clusters]
    width = len(str(len(clusters) - 1))
    names = ["{}{:0{}d}".format(prefix, i, width) for i in range(len(clusters))]
    subs = [[classes[i] for i in list(q) + e] for q, e in zip(clusters, extra)]
    over = [[classes[i] for i in e] for e in extra]
    return Hierarchy(names, subs, over), z


def _leaves(z):
    from scipy.cluster.hierarchy import leaves_list

    return leaves_list(z)


def load_confusion(path: str) -> Tuple[np.ndarray, Optional[List[str]]]:
    """(matrix, class names or None) from .npy, .csv (optional header row of names) or .json
    (a list of rows, or ``{"confusion": rows, "classes": names}``)."""
    if not os.path.isfile(path):
        raise UsageError("{}: no such confusion-matrix file".format(path))
    ext = os.path.splitext(path)[1].lower()
    names = None
    try:
        if ext == ".npy":
            m = np.load(path, allow_pickle=False)
        elif ext == ".csv":
            m, names = _read_csv(path)
        elif ext == ".json":
            with open(path) as f:
                d = json.load(f, parse_constant=_no_constant)
            if isinstance(d, dict):
                m, names = d.get("confusion"), d.get("classes")
                if m is None:
                    raise ValueError('no "confusion" field')
            else:
                m = d
        else:
            raise UsageError("{}: unknown confusion-matrix format (use .npy, .csv or .json)".format(path))
    except (ValueError, OSError, EOFError, UnicodeDecodeError, RecursionError) as exc:
        raise UsageError("{}: cannot read a confusion matrix ({})".format(path, str(exc)[:120])) from None
    m = check_confusion(m, path)
    if names is not None:
        if not isinstance(names, list) or len(names) != len(m) or not all(isinstance(n, str) for n in names):
            raise UsageError("{}: needs one class name per row ({} rows)".format(path, len(m)))
    return m, names


def _no_constant(name):
    raise ValueError("{} is not a number".format(name))


def _read_csv(path: str):
    import csv

    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    names = None
    if rows:
        try:
            float(rows[0][0])
        except ValueError:
            names, rows = [n.strip() for n in rows[0]], rows[1:]
    return [[float(v) for v in r] for r in rows], names
