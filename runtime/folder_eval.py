"""``classify --eval``: a labelled image folder (ImageFolder layout: FOLDER/<class>/<image>) measured
with a bundle: accuracy, superclass accuracy, a per-class table and the confusion matrix.

The folder names are the labels.  A folder matches a class of the bundle by its name, or by the
file-name form of it (``T-shirt/top`` is ``T-shirt_top``, as ``edgetool data sample-images``
writes it).  Pure arithmetic on predictions, no torch: the device can run it.
"""

from __future__ import annotations

import json
import os
import re
from typing import List, Sequence

import numpy as np

from .errors import UsageError
from .files import check_output, slug

TEXT_MATRIX_MAX = 20  # classes up to which the text report prints the confusion matrix
TEXT_WIDTH = 120  # ... when its rows, headed by the class names, fit this many characters
TOP_CONFUSIONS = 20  # otherwise it lists this many of the most frequent confusions


def check_request(images: Sequence[str], evaluate: bool, plot) -> None:
    """One error line for --eval and --plot given wrongly, before the bundle is read."""
    if plot and not evaluate:
        raise UsageError("--plot draws the confusion matrix of --eval; add --eval")
    if plot:
        check_output(plot, "--plot")
    if evaluate and (len(images) != 1 or not os.path.isdir(images[0])):
        raise UsageError("--eval takes one labelled folder (FOLDER/<class>/<image>), got {}".format(" ".join(images)))


def name_order(name: str) -> tuple:
    """Sort key of a class name: by name, case-blind, numbers in it by value ("2" before "10")."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t), name


def bundle_classes(bundle) -> List[str]:
    """Every class of *bundle* once, ordered by name (:func:`name_order`), as the report lists them."""
    return sorted({c for s in bundle.superclasses for c in s.subclasses}, key=name_order)


def report(bundle, folder: str, done, as_json: bool, plot) -> str:
    """The --eval report of *done* ([(file, prediction)] of the files under labelled *folder*): JSON or
    text; with *plot*, the confusion matrix also as that PNG."""
    classes = bundle_classes(bundle)
    true = folder_labels(folder, [f for f, _ in done], classes)
    index = {c: i for i, c in enumerate(classes)}
    r = measure(true, [index[p.label] for _, p in done], [p.superclass for _, p in done], bundle, classes)
    if plot:
        plot_png(r, plot)
    if as_json:
        return json.dumps(r, allow_nan=False)
    return "\n".join(text_lines(r)) + ("\nconfusion matrix plot: {}".format(plot) if plot else "")


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
    return lines + [""] + matrix_lines(r["classes"], r["confusion"], w)


def matrix_lines(classes: Sequence[str], conf: Sequence[Sequence[int]], w: int) -> List[str]:
    """The confusion matrix, its rows and columns headed by the class names, while it fits
    :data:`TEXT_WIDTH`; else the most frequent confusions, one per line."""
    n = len(classes)
    cw = [max(3, len(c), len(str(max(row[j] for row in conf)))) for j, c in enumerate(classes)]
    if n <= TEXT_MATRIX_MAX and w + 2 + sum(cw) + 2 * (n - 1) <= TEXT_WIDTH:
        cells = lambda values: "  ".join("{:>{}}".format(v, cw[j]) for j, v in enumerate(values))  # noqa: E731
        lines = ["confusion matrix (rows: true class, columns: predicted class)", " " * (w + 2) + cells(classes)]
        return lines + ["{:<{w}}  ".format(c, w=w) + cells(row) for c, row in zip(classes, conf)]
    pairs = [(v, i, j) for i, row in enumerate(conf) for j, v in enumerate(row) if i != j and v]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    lines = [
        "most frequent confusions ({} of {}; the whole {}-class matrix is in --json and --plot)".format(
            min(len(pairs), TOP_CONFUSIONS), len(pairs), n
        )
    ]
    lines += [
        "  {} images of {} predicted as {}".format(v, classes[i], classes[j]) for v, i, j in pairs[:TOP_CONFUSIONS]
    ]
    return lines + (["  none"] if not pairs else [])


def plot_png(r: dict, path: str) -> None:
    """The confusion matrix as a PNG heat map (rows normalised: the share of each true class), its rows
    and columns headed by the class names where the cells are large enough; written atomically."""
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
    if named:  # the class names head the rows, and the columns (turned upright)
        for i, c in enumerate(r["classes"]):
            draw.text((4, top + i * cell + max(0, (cell - 10) // 2)), c[:22], fill="black")
            label = Image.new("RGB", (margin - 8, 12), "white")
            ImageDraw.Draw(label).text((0, 0), c[:22], fill="black")
            img.paste(label.rotate(90, expand=True), (margin + i * cell + max(0, (cell - 12) // 2), top - margin))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
