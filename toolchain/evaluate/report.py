"""``edgetool evaluate``: does Super-Sub pay off on this data?  A report in Markdown, HTML and JSON.

Plots (PNG): the superclass confusion matrix (paper Fig. 2); per-superclass accuracy of the
lower bound, upper bound, vanilla and efficient Super-Sub (Fig. 3/6); int8 delta histograms
per superclass (Fig. 7c); compression per superclass for fp16 deltas + 7z without QAT and
int8 deltas + 7z / zstd with QAT (Fig. 7d/e).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Dict, Optional, Sequence

import numpy as np

from edgetool.runtime.bundle import codecs

from . import bounds
from ..train import qat
from . import metrics as report
from .pages import KINDS, NETWORKS, markdown, to_html
from ..train.run import Run


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fp16_delta_bytes(base_model, sub_model, codec="7z") -> Dict[str, int]:
    """fp16 weight deltas of two float networks (no QAT), compressed; and the fp16 network size."""
    bs, ss = base_model.state_dict(), sub_model.state_dict()
    parts, raw = [], 0
    for k, v in bs.items():
        if not v.dtype.is_floating_point:
            continue
        d = (ss[k].half().float() - v.half().float()).half().numpy()
        parts.append(d.tobytes())
        raw += v.numel() * 2
    blob = b"".join(parts)
    return {"stored": len(codecs.encode(codec, blob)), "network": raw}


def evaluate(run: Run, bundle_dir: Optional[str], out_dir: str, adaptive: Sequence[str] = ()) -> dict:
    """Measure *run* (and its bundle; exported to a temporary folder when none is given) and
    write report.json / report.md / report.html and the plots into *out_dir*; with *adaptive*
    candidates, also adaptive network selection (Algorithm 2) over them."""
    os.makedirs(out_dir, exist_ok=True)
    if bundle_dir is None:
        with tempfile.TemporaryDirectory(prefix="edgetool-eval-") as tmp:
            return evaluate(run, run_export(run, os.path.join(tmp, "bundle")), out_dir, adaptive)
    from edgetool.runtime.bundle.reader import Bundle

    with Bundle.open(bundle_dir) as b:
        manifest = dict(b.manifest)
        bundle_bytes = dict(b.stored_bytes(), files=_tree_bytes(bundle_dir))
    hier = run.hier
    N = hier.n_super
    y = run.yte.numpy()
    true_k = run.sup_of[y]
    m = bounds.measure(run, bundle_dir, manifest)
    conf = report.confusion_matrix(true_k, m["route"], N)
    per_super = {key: report.per_group_accuracy(ok, true_k, N) for key, ok in m["correct"].items()}

    deltas, compression = delta_stats(run, m)
    from ..routing.search import policies

    routing_policies = policies(run)
    rep = dict(bounds.summary(m))
    rep.update(
        {
            "dataset": os.path.basename(os.path.normpath(run.cfg.data)),
            "model": run.cfg.arch,
            "superclasses": hier.superclasses,
            "test_images": int(len(y)),
            "codec": manifest["deltas"][0]["codec"] if manifest["deltas"] else None,
            "bundle_bytes": bundle_bytes,
            "base_onnx_bytes": manifest["base"]["size"],
            "superclass_accuracy": m["routing"]["base_fp32"],
            "confusion_network": "superclass (base) network, fp32 (torch)",
            "networks": NETWORKS,
            "augmentation": run.data.augmentation,
            "input": {k: run.input_spec[k] for k in ("shape", "color", "channels_from")},
            "confusion_counts": conf.tolist(),
            "confusion_percent": report.row_percent(conf).round(2).tolist(),
            "per_superclass_accuracy": per_super,
            "deltas": deltas,
            "compression": compression,
            "routing_policies": routing_policies,
        }
    )
    if adaptive:
        rep["adaptive"] = adaptive_selection(run, adaptive)
    return write_report(rep, out_dir)


def adaptive_selection(run: Run, candidates: Sequence[str]) -> dict:
    """Algorithm 2: each cluster's vanilla network chosen among *candidates* on the validation
    split, then routed top-1 and gated top-2 on the test set like the vanilla networks."""
    from .adaptive import select
    from ..routing.search import policies

    sel = select(run, candidates)
    rp = policies(run, sel["nets"])
    names = run.hier.superclasses
    return {
        "candidates": list(candidates),
        "choice": dict(zip(names, sel["choice"])),
        "validation_accuracy": dict(zip(names, sel["validation_accuracy"])),
        "top1_accuracy": rp["topk"]["top1_accuracy"],
        "routing": rp["topk"],
    }


def write_report(rep: dict, out_dir: str) -> dict:
    """The plots, then report.json (strict JSON: a figure that cannot be computed is null with a
    reason, never NaN), report.md and report.html."""
    rep["plots"] = make_plots(rep, out_dir)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(rep, f, indent=1, allow_nan=False)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(rep))
    with open(os.path.join(out_dir, "report.html"), "w") as f:
        f.write(to_html(rep))
    return rep


def delta_stats(run: Run, m: dict):
    """Per superclass: the int8 code delta's histogram, and the paper's fp16-without-QAT comparison."""
    sup = run.superclass()
    base_qat = run.super_qat()
    deltas, compression = {}, {}
    for k, name in enumerate(run.hier.superclasses):
        d = qat.code_delta(base_qat, run.sub_qat(k))
        signed = report.signed_int8(d)
        counts, _ = np.histogram(signed, bins=np.arange(-128, 129))
        deltas[name] = {
            "histogram": counts.tolist(),
            "changed_fraction": float((d != 0).mean()),
            "max_abs": int(np.abs(signed.astype(np.int16)).max()),
        }
        fp16 = fp16_delta_bytes(sup, run.vanilla(k), "7z")
        compression[name] = {
            "fp16_7z_no_qat": fp16["stored"] / fp16["network"],
            "bundle_x": m["x"]["per_superclass"][name],
        }
    return deltas, compression


def _tree_bytes(path: str) -> Optional[int]:
    """Bytes of every file of a bundle folder (manifest and samples included); None for an archive."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def run_export(run: Run, out_dir: str) -> str:
    run.export(out_dir)
    return out_dir


def make_plots(rep: dict, out_dir: str) -> Dict[str, str]:
    plt = _plt()
    names = rep["superclasses"]
    return {
        "confusion": _plot_confusion(plt, rep, names, out_dir),
        "per_superclass": _plot_per_superclass(plt, rep, names, out_dir),
        "delta_histograms": _plot_delta_histograms(plt, rep, names, out_dir),
        "compression": _plot_compression(plt, rep, names, out_dir),
    }


def _plot_confusion(plt, rep, names, out_dir):
    N = len(names)
    pct = np.asarray(rep["confusion_percent"])
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * N, 1.0 + 0.8 * N))
    ax.imshow(pct, cmap="Greens", vmin=0, vmax=100)
    for i in range(N):
        for j in range(N):
            ax.text(
                j,
                i,
                "{:.1f}".format(pct[i, j]),
                ha="center",
                va="center",
                color="white" if pct[i, j] > 60 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(N), names, rotation=45, ha="right")
    ax.set_yticks(range(N), names)
    ax.set_xlabel("predicted superclass")
    ax.set_ylabel("actual superclass")
    ax.set_title("Superclass confusion [%], base network")
    fig.tight_layout()
    return _save(fig, out_dir, "confusion.png")


def _plot_per_superclass(plt, rep, names, out_dir):
    N = len(names)
    fig, ax = plt.subplots(figsize=(2.5 + 1.6 * N, 3.8))
    kinds = [k for k in KINDS if k[0] in rep["per_superclass_accuracy"]]  # a report may predate a row
    w = 0.8 / len(kinds)
    vals_all = []
    for i, (key, label, color) in enumerate(kinds):
        # a superclass without test images has no bar (NaN), not a bar at 0 that would unzoom the axis
        vals = [100 * v if v is not None else np.nan for v in rep["per_superclass_accuracy"][key]]
        vals_all += [v for v in vals if v == v]
        ax.bar(np.arange(N) + (i - (len(kinds) - 1) / 2) * w, vals, w, label=label, color=color)
    vals_all = vals_all or [0.0, 100.0]
    lo = max(0.0, min(vals_all) - 3.0)
    ax.set_ylim(lo, min(100.0, max(vals_all) + 1.0))
    ax.set_xticks(range(N), names)
    ax.set_ylabel("accuracy [%]")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Per-superclass accuracy (axis from {:.0f}%)".format(lo))
    fig.tight_layout()
    return _save(fig, out_dir, "per_superclass.png")


def _plot_delta_histograms(plt, rep, names, out_dir):
    N = len(names)
    fig, axes = plt.subplots(1, N, figsize=(3.2 * N, 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        h = np.asarray(rep["deltas"][name]["histogram"], dtype=np.float64)
        steps = np.arange(-128, 128)
        nz = h > 0
        ax.bar(steps[nz], h[nz], width=1.0, color="#1f77b4")
        ax.set_yscale("log")
        span = max(3, int(np.abs(steps[nz]).max()) + 1) if nz.any() else 3
        ax.set_xlim(-span, span)
        ax.set_title("{} ({:.1%} changed)".format(name, rep["deltas"][name]["changed_fraction"]), fontsize=9)
        ax.set_xlabel("int8 delta (code steps)")
    axes[0][0].set_ylabel("count (log)")
    fig.tight_layout()
    return _save(fig, out_dir, "delta_histograms.png")


def _plot_compression(plt, rep, names, out_dir):
    N = len(names)
    fig, ax = plt.subplots(figsize=(2 + 1.4 * N, 4.2))
    ckinds = [
        ("fp16_7z_no_qat", "fp16 delta + 7z, no QAT (paper's baseline)"),
        ("bundle_x", "int8 delta as stored in the bundle ({})".format(rep.get("codec"))),
    ]
    w = 0.35
    for i, (key, label) in enumerate(ckinds):
        ax.bar(np.arange(N) + (i - 0.5) * w, [rep["compression"][n][key] for n in names], w, label=label)
    ax.axhline(0.2, color="gray", ls="--", lw=1, label="paper: 0.2")
    ax.set_xticks(range(N), names)
    ax.set_ylabel("x = stored delta / one network")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1)
    ax.set_title("Storage per subclass network")
    fig.tight_layout()
    return _save(fig, out_dir, "compression.png")


def _save(fig, out_dir, name):
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    _plt().close(fig)
    return name
