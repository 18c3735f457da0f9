"""``classify --eval``: a labelled image folder (ImageFolder layout: FOLDER/<class>/<image>) measured
with a bundle: accuracy, superclass accuracy, a per-class table and the confusion matrix.

The folder names are the labels.  A folder matches a class of the bundle by its name, or by the
file-name form of it (``T-shirt/top`` is ``T-shirt_top``, as ``edgetool data sample-images``
writes it).  Pure arithmetic on predictions, no torch: the device can run it.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

import numpy as np

from .errors import UsageError
from .files import slug

TEXT_MATRIX_MAX = 20  # classes up to which the text report prints the confusion matrix


def bundle_classes(bundle) -> List[str]:
    """Every class of *bundle* once, in the order of its superclasses (a shared class at its first)."""
    seen: Dict[str, None] = {}
    for s in bundle.superclasses:
        for c in s.subclasses:
            seen.setdefault(c, None)
    return list(seen)


def folder_labels(folder: str, files: Sequence[str], classes: Sequence[str]) -> List[int]:
    """The class index of every file: the name of its first folder under *folder*.  One error line
    for a file outside a class folder, or for folder names that are no class of the bundle."""
    by_name = {c: i for i, c in enumerate(classes)}
    by_slug = {slug(c): i for i, c in enumerate(classes)}
    labels, unknown = [], set()
    for f in files:
        parts = os.path.relpath(f, folder).split(os.sep)
        if len(parts) < 2:
            raise UsageError(
                "{}: not inside a class folder; --eval reads FOLDER/<class>/<image> (the folder names are "
                "the labels)".format(f)
            )
        name = parts[0]
        i = by_name.get(name, by_slug.get(name))
        if i is None:
            unknown.add(name)
        labels.append(-1 if i is None else i)
    if unknown:
        shown = ", ".join(list(classes)[:12]) + (", ..." if len(classes) > 12 else "")
        raise UsageError(
            "{}: class folders {} are no class of the bundle (its classes: {})".format(
                folder, ", ".join(sorted(map(repr, unknown))), shown
            )
        )
    return labels


def measure(true: Sequence[int], pred: Sequence[int], pred_super: Sequence[int], bundle, classes) -> dict:
    """The report: accuracy, superclass accuracy (routed to a superclass that holds the true class),
    a per-class table and the confusion matrix (rows: true class, columns: predicted)."""
    t, p = np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    n = len(classes)
    holds = np.zeros((len(bundle.superclasses), n), dtype=bool)  # superclass k holds class c
    index = {c: i for i, c in enumerate(classes)}
    for k, s in enumerate(bundle.superclasses):
        for c in s.subclasses:
            holds[k, index[c]] = True
    conf = np.zeros((n, n), dtype=np.int64)
    np.add.at(conf, (t, p), 1)
    primary = {c: s.name for s in bundle.superclasses for c in s.subclasses if c not in s.overlap}  # once each
    per_class = []
    for c in range(n):
        images, correct = int(conf[c].sum()), int(conf[c, c])
        row = {"class": classes[c], "superclass": primary.get(classes[c]), "images": images, "correct": correct}
        row["accuracy"] = correct / images if images else None
        per_class.append(row)
    return {
        "images": int(len(t)),
        "accuracy": float((t == p).mean()) if len(t) else None,
        "superclass_accuracy": float(holds[np.asarray(pred_super, dtype=np.int64), t].mean()) if len(t) else None,
        "classes": list(classes),
        "per_class": per_class,
        "confusion": conf.tolist(),
    }


def text_lines(r: dict) -> List[str]:
    """The report for people: the two accuracies, the per-class table, the matrix while it fits."""

    def pct(v):
        return "-" if v is None else "{:.2f}%".format(100 * v)

    n_ok = sum(row["correct"] for row in r["per_class"])
    lines = [
        "accuracy             {} ({}/{} images)".format(pct(r["accuracy"]), n_ok, r["images"]),
        "superclass accuracy  {}".format(pct(r["superclass_accuracy"])),
        "",
    ]
    w = max(len(c) for c in r["classes"] + ["class"])
    lines.append("{:<{w}}  {:>6}  {:>7}  {:>8}".format("class", "images", "correct", "accuracy", w=w))
    for row in r["per_class"]:
        lines.append(
            "{:<{w}}  {:>6}  {:>7}  {:>8}".format(
                row["class"], row["images"], row["correct"], pct(row["accuracy"]), w=w
            )
        )
    n = len(r["classes"])
    if n > TEXT_MATRIX_MAX:
        return lines + ["", "confusion matrix: {} classes, in --json and --plot".format(n)]
    lines += ["", "confusion matrix (rows: true class, columns: predicted, numbered as the rows)"]
    cw = max(3, len(str(max(max(row) for row in r["confusion"]))))
    lines.append(" " * (w + 5) + " ".join("{:>{cw}}".format(j, cw=cw) for j in range(n)))
    for i, row in enumerate(r["confusion"]):
        lines.append(
            "{:>2} {:<{w}}  ".format(i, r["classes"][i], w=w) + " ".join("{:>{cw}}".format(v, cw=cw) for v in row)
        )
    return lines


def plot_png(r: dict, path: str) -> None:
    """The confusion matrix as a PNG heat map (rows normalised: the share of each true class), with
    the class names where the cells are large enough; written atomically."""
    from PIL import Image, ImageDraw

    from .files import atomic_path

    conf = np.asarray(r["confusion"], dtype=np.float64)
    n = len(conf)
    cell = max(3, min(28, 720 // max(n, 1)))
    named = cell >= 10
    margin = 8 + (min(160, 7 * max(len(c) for c in r["classes"])) if named else 0)
    top = 28 + margin
    img = Image.new("RGB", (margin + n * cell + 8, top + n * cell + 8), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), "confusion: {} images, accuracy {:.2%}".format(r["images"], r["accuracy"] or 0.0), fill="black")
    share = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    for i in range(n):
        for j in range(n):
            v = share[i, j]
            color = (int(255 * (1 - v)), int(255 * (1 - 0.6 * v)), 255) if v > 0 else (255, 255, 255)
            x, y = margin + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=color, outline=(220, 220, 220))
    if named:
        for i, c in enumerate(r["classes"]):
            draw.text((4, top + i * cell + max(0, (cell - 10) // 2)), c[:22], fill="black")
            draw.text((margin + i * cell + 2, top - 12), str(i), fill="black")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
