"""``edgetool hierarchy learn``: a hierarchy file (and a dendrogram) from what a network confuses."""

from __future__ import annotations

import logging
import math
import os
from typing import List, Optional, Sequence

import click

from edgetool.runtime import commands
from edgetool.runtime.errors import UsageError, require

log = logging.getLogger(__name__)
WEAK_SIGNAL = 0.05  # share of the confusion off the diagonal below which a learned hierarchy is noise

require("scipy", "train")


@click.group()
def hierarchy():
    """Class hierarchies: learn one from a confusion matrix."""


@hierarchy.command()
@click.argument("source", type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(), help="Hierarchy JSON file to write.")
@click.option(
    "--theta",
    type=int,
    default=None,
    show_default="ceil(sqrt(K)) for K classes",
    help="Cap on the classes of one cluster (primary members).",
)
@click.option(
    "--min-size",
    type=int,
    default=None,
    show_default="ceil(theta/2)",
    help="Clusters under this many classes join their nearest cluster within theta (1: off).",
)
@click.option(
    "--gamma",
    type=float,
    default=None,
    show_default="no overlap",
    help="Overlap factor: class j also joins cluster Q when the column-normalised confusion "
    "DCN[i, j] >= 1/(gamma K) for a class i of Q (larger = more overlap).",
)
@click.option(
    "--split",
    type=click.Choice(["val", "test"]),
    default="val",
    show_default=True,
    help="For a run: the images the flat network's confusion is measured on (val: the run's --val-fraction).",
)
@click.option(
    "--counts",
    type=click.Choice(["soft", "hard"]),
    default="soft",
    show_default=True,
    help="For a run: add each image's softmax probabilities to its row (soft: expected counts, informative on "
    "a small validation split) or one count at its argmax (hard).",
)
@click.option(
    "--classes",
    "classes_file",
    type=click.Path(),
    show_default="class 0, class 1, ...",
    help="Class names, one a line, for a matrix without names.",
)
@click.option("--dendrogram", type=click.Path(), show_default="OUT with .png", help="Dendrogram PNG.")
@click.option("--force", is_flag=True, help="Overwrite OUT.")
def learn(source, out, theta, min_size, gamma, split, counts, classes_file, dendrogram, force):
    """Learn superclasses from SOURCE: a confusion matrix (.npy, .csv, .json; rows = true class),
    or a training run whose flat network is measured on its validation split.

    Chennupati et al., Algorithm 1: D = 1 - C (row-normalised, symmetric), UPGMA linkage,
    top-down division with a cap THETA on cluster size, optional overlap GAMMA.
    """
    from edgetool.runtime.files import write_json_atomic

    from . import learn as HL

    if os.path.exists(out) and not force:
        raise UsageError("{}: exists; pass --force to overwrite it".format(out))
    for path in (out, dendrogram):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UsageError("{}: no such folder".format(os.path.dirname(path)))
    if os.path.isdir(source):
        conf, classes = run_confusion(source, split, counts)
        origin = "run {} ({} split, flat network, {} counts)".format(source, split, counts)
    else:
        conf, classes = HL.load_confusion(source)
        origin = os.path.basename(source)
    classes = _names(classes, classes_file, len(conf))
    theta = theta if theta is not None else math.ceil(math.sqrt(len(conf)))
    hier, z = HL.learn(conf, classes, theta, gamma, min_size)
    share = HL.off_diagonal_share(conf)
    if share < WEAK_SIGNAL:
        log.warning(
            "%s: only %.2f%% of the confusion lies off the diagonal, too little to cluster on: the superclasses "
            "follow noise; learn from a split the network gets wrong more often, or give a hierarchy",
            origin,
            100 * share,
        )
    d = hier.to_dict()
    d["label_index"] = {str(i): c for i, c in enumerate(classes)}
    d["learned"] = {
        "method": "UPGMA on D = 1 - C",
        "theta": theta,
        "min_size": min_size,
        "gamma": gamma,
        "source": origin,
    }
    write_json_atomic(out, d)
    png = dendrogram or os.path.splitext(out)[0] + ".png"
    plot_dendrogram(z, classes, hier, theta, png)
    shared = sum(len(o) for o in hier.overlap)
    click.echo(
        "{} superclasses from {} classes (theta {}, {} shared): {}".format(
            hier.n_super, len(classes), theta, shared, out
        )
    )
    for name, subs in zip(hier.superclasses, hier.subclasses):
        click.echo("  {}: {}".format(name, ", ".join(subs)))
    click.echo("dendrogram: {}".format(png))


def _names(classes: Optional[List[str]], classes_file: Optional[str], k: int) -> List[str]:
    if classes_file:
        if not os.path.isfile(classes_file):
            raise UsageError("{}: no such class-names file".format(classes_file))
        with open(classes_file) as f:
            classes = [line.strip() for line in f if line.strip()]
        if len(classes) != k:
            raise UsageError("{}: {} names for {} classes".format(classes_file, len(classes), k))
    return list(classes) if classes else [str(i) for i in range(k)]


def run_confusion(run_dir: str, split: str, counts: str = "soft"):
    """(confusion, classes) of the run's flat network on its validation (or test) images; rows: true
    class; *counts* "soft" adds each image's softmax probabilities, "hard" one count at the argmax."""
    import numpy as np

    from ..train import fit as training
    from ..train.run import Run

    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise UsageError("{}: neither a confusion-matrix file nor a training run".format(run_dir))
    if not os.path.isfile(os.path.join(run_dir, "flat.pt")):
        raise UsageError("{}: no flat network; run `{}` first".format(run_dir, commands.train(run_dir, "flat")))
    run = Run.open(run_dir, progress=False)
    if split == "val":
        if run.data.val is None:
            raise UsageError(
                "{}: the run holds no validation split; train it with --val-fraction (or use --split test)".format(
                    run_dir
                )
            )
        x, y = training.to_tensor(run.data.val, run.mean, run.std), run.data.val.labels
    else:
        x, y = run.xte, run.yte.numpy()
    import torch

    prob = torch.softmax(training.predict_logits(run.flat(), x).double(), 1).numpy()
    k = len(run.train.classes)
    conf = np.zeros((k, k), dtype=np.float64)
    if counts == "soft":
        np.add.at(conf, y, prob)
    else:
        np.add.at(conf, (y, prob.argmax(1)), 1.0)
    missing = [run.train.classes[i] for i in np.nonzero(conf.sum(1) == 0)[0]]
    if missing:
        raise UsageError(
            "{}: no {} images of class {}; hold out more (--val-fraction)".format(run_dir, split, missing[0])
        )
    return conf, list(run.train.classes)


def plot_dendrogram(z, classes: Sequence[str], hier, theta: int, path: str) -> None:
    """The UPGMA dendrogram, leaves coloured by learned superclass (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    from edgetool.runtime.files import write_bytes_atomic

    primary = {c: k for k, (s, o) in enumerate(zip(hier.subclasses, hier.overlap)) for c in s if c not in o}
    colors = plt.get_cmap("tab10")
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * k + 2), 4.5))
    dendrogram(z, labels=list(classes), ax=ax, color_threshold=0, above_threshold_color="0.4", leaf_rotation=90)
    for lbl in ax.get_xticklabels():
        lbl.set_color(colors(primary[lbl.get_text()] % 10))
        lbl.set_fontsize(max(4, min(9, 500 // k)))
    lo, hi = float(z[:, 2].min()), float(z[:, 2].max())
    ax.set_ylim(max(0.0, lo - 0.1 * (hi - lo + 1e-9)), hi + 0.02 * (hi - lo + 1e-9))  # zoomed to the merges
    ax.set_ylabel("UPGMA distance (1 - confusion)")
    ax.set_title("{} classes -> {} superclasses (theta {})".format(k, hier.n_super, theta))
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
