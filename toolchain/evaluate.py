"""``edgetool evaluate``: does Super-Sub pay off on this data?  A report in Markdown, HTML and JSON.

Plots (PNG): the superclass confusion matrix (paper Fig. 2); per-superclass accuracy of the
lower bound, upper bound, vanilla and efficient Super-Sub (Fig. 3/6); int8 delta histograms
per superclass (Fig. 7c); compression per superclass for fp16 deltas + 7z without QAT and
int8 deltas + 7z / zstd with QAT (Fig. 7d/e).
"""
from __future__ import annotations

import html
import json
import os
from typing import Dict, Optional

import numpy as np

from edgetool.runtime import codecs

from . import qat as Q
from . import report as R
from . import train as T
from .pipeline import Run


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


def evaluate(run: Run, bundle_dir: Optional[str], out_dir: str, upper: str = "auto") -> dict:
    os.makedirs(out_dir, exist_ok=True)
    hier = run.hier
    N = hier.n_super
    y = run.yte.numpy()
    true_k, true_j = run.sup_of[y], run.loc_of[y]

    # lower bound: the flat network
    flat_pred = T.predict_logits(run.flat(), run.xte).argmax(1).numpy()
    lower_ok = flat_pred == y
    # superclass routing by the superclass network
    sup = run.superclass()
    route = T.predict_logits(sup, run.xte, N).argmax(1).numpy()
    conf = R.confusion_matrix(true_k, route, N)

    def two_stage(nets, ks):
        ok = np.zeros(len(y), dtype=bool)
        for k in range(N):
            idx = np.nonzero(ks == k)[0]
            if len(idx):
                j = T.predict_logits(nets[k], run.xte[idx], len(hier.subclasses[k])).argmax(1).numpy()
                ok[idx] = (true_k[idx] == k) & (true_j[idx] == j)
        return ok

    finetuned = [run.vanilla(k) for k in range(N)]
    scratch_ready = all(os.path.isfile(run.p("scratch", "{}.pt".format(k))) for k in range(N))
    if upper == "scratch" or (upper == "auto" and scratch_ready):
        upper_nets, upper_kind = [run.vanilla(k, init="scratch") for k in range(N)], "scratch"
    else:
        upper_nets, upper_kind = finetuned, "finetune"
    upper_ok = two_stage(upper_nets, true_k)
    vanilla_ok = two_stage(finetuned, route)

    qat = [run.sub_qat(k) for k in range(N)]
    base_qat = run.super_qat()
    efficient_source = "torch (QAT networks)"
    if bundle_dir is not None:
        from .runtime_eval import evaluate_bundle_predictions

        ks, js = evaluate_bundle_predictions(bundle_dir, run.xte.numpy())
        efficient_ok = (ks == true_k) & (js == true_j)
        efficient_source = "runtime (ONNX Runtime on the bundle)"
    else:
        qroute = T.predict_logits(base_qat, run.xte, N).argmax(1).numpy()
        efficient_ok = two_stage(qat, qroute)

    acc = {"lower": float(lower_ok.mean()), "upper": float(upper_ok.mean()), "vanilla": float(vanilla_ok.mean()),
           "efficient": float(efficient_ok.mean())}
    per_super = {name: R.per_group_accuracy(ok, true_k, N) for name, ok in
                 (("lower", lower_ok), ("upper", upper_ok), ("vanilla", vanilla_ok), ("efficient", efficient_ok))}

    # deltas: int8 histograms and compression per superclass
    base_codes = base_qat.int8_codes()
    int8_bytes = sum(v.size for v in base_codes.values())
    hist_edges = np.arange(-128, 129)
    deltas, compression = {}, {}
    for k, name in enumerate(hier.superclasses):
        d = Q.code_delta(base_qat, qat[k])
        signed = R.signed_int8(d)
        counts, _ = np.histogram(signed, bins=hist_edges)
        deltas[name] = {"histogram": counts.tolist(), "changed_fraction": float((d != 0).mean()),
                        "max_abs": int(np.abs(signed.astype(np.int16)).max())}
        fp16 = fp16_delta_bytes(sup, finetuned[k], "7z")
        raw = d.tobytes()
        compression[name] = {"fp16_7z_no_qat": fp16["stored"] / fp16["network"],
                             "int8_7z_qat": len(codecs.encode("7z", raw)) / int8_bytes,
                             "int8_zstd_qat": len(codecs.encode("zstd", raw)) / int8_bytes}
    mean_x = {key: float(np.mean([c[key] for c in compression.values()])) for key in next(iter(compression.values()))}

    rep = {
        "dataset": run.cfg.data, "model": run.cfg.arch, "superclasses": hier.superclasses,
        "test_images": int(len(y)), "upper_bound_networks": upper_kind, "efficient_measured_with": efficient_source,
        "accuracy": acc, "headline": R.headline(acc),
        "superclass_accuracy": float((route == true_k).mean()),
        "confusion_counts": conf.tolist(), "confusion_percent": R.row_percent(conf).round(2).tolist(),
        "per_superclass_accuracy": per_super, "deltas": deltas, "compression": compression,
        "storage_per_subclass_network": mean_x,
    }
    plots = make_plots(rep, out_dir)
    rep["plots"] = plots
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(rep, f, indent=1)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(rep))
    with open(os.path.join(out_dir, "report.html"), "w") as f:
        f.write(to_html(rep))
    return rep


def make_plots(rep: dict, out_dir: str) -> Dict[str, str]:
    plt = _plt()
    names = rep["superclasses"]
    N = len(names)
    files = {}

    pct = np.asarray(rep["confusion_percent"])
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * N, 1.0 + 0.8 * N))
    ax.imshow(pct, cmap="Greens", vmin=0, vmax=100)
    for i in range(N):
        for j in range(N):
            ax.text(j, i, "{:.1f}".format(pct[i, j]), ha="center", va="center",
                    color="white" if pct[i, j] > 60 else "black", fontsize=9)
    ax.set_xticks(range(N), names, rotation=45, ha="right")
    ax.set_yticks(range(N), names)
    ax.set_xlabel("predicted superclass")
    ax.set_ylabel("actual superclass")
    ax.set_title("Superclass confusion [%]")
    fig.tight_layout()
    files["confusion"] = _save(fig, out_dir, "confusion.png")

    fig, ax = plt.subplots(figsize=(2 + 1.4 * N, 3.5))
    kinds = [("lower", "lower bound (flat)", "#d62728"), ("upper", "upper bound (oracle)", "#2ca02c"),
             ("vanilla", "vanilla Super-Sub", "#1f77b4"), ("efficient", "efficient int8 Super-Sub", "#ff7f0e")]
    w = 0.2
    for i, (key, label, color) in enumerate(kinds):
        vals = [100 * v for v in rep["per_superclass_accuracy"][key]]
        ax.bar(np.arange(N) + (i - 1.5) * w, vals, w, label=label, color=color)
    ax.set_xticks(range(N), names)
    ax.set_ylabel("accuracy [%]")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Per-superclass accuracy")
    fig.tight_layout()
    files["per_superclass"] = _save(fig, out_dir, "per_superclass.png")

    fig, axes = plt.subplots(1, N, figsize=(3.2 * N, 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        h = np.asarray(rep["deltas"][name]["histogram"], dtype=np.float64)
        ax.bar(np.arange(-128, 128), np.maximum(h, 0.5), width=1.0, color="#1f77b4")
        ax.set_yscale("log")
        ax.set_xlim(-40, 40)
        ax.set_title("{} ({:.0%} changed)".format(name, rep["deltas"][name]["changed_fraction"]), fontsize=9)
        ax.set_xlabel("int8 delta (code steps)")
    axes[0][0].set_ylabel("count (log)")
    fig.tight_layout()
    files["delta_histograms"] = _save(fig, out_dir, "delta_histograms.png")

    fig, ax = plt.subplots(figsize=(2 + 1.4 * N, 4.2))
    ckinds = [("fp16_7z_no_qat", "fp16 delta + 7z, no QAT"), ("int8_7z_qat", "int8 delta + 7z, QAT"),
              ("int8_zstd_qat", "int8 delta + zstd, QAT")]
    w = 0.25
    for i, (key, label) in enumerate(ckinds):
        ax.bar(np.arange(N) + (i - 1) * w, [rep["compression"][n][key] for n in names], w, label=label)
    ax.axhline(0.2, color="gray", ls="--", lw=1, label="paper: 0.2")
    ax.set_xticks(range(N), names)
    ax.set_ylabel("stored / uncompressed network")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax.set_title("Storage per subclass network")
    fig.tight_layout()
    files["compression"] = _save(fig, out_dir, "compression.png")
    return files


def _save(fig, out_dir, name):
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    _plt().close(fig)
    return name


def _pct(v):
    return "n/a" if v != v else "{:.2f}%".format(100 * v)


def markdown(rep: dict) -> str:
    a, h = rep["accuracy"], rep["headline"]
    lines = ["# Super-Sub evaluation: {} ({})".format(rep["dataset"], rep["model"]), "",
             "{} test images; superclasses: {}.".format(rep["test_images"], ", ".join(rep["superclasses"])),
             "Upper bound: {} subclass networks with the true superclass. Efficient: measured with {}.".format(
                 rep["upper_bound_networks"], rep["efficient_measured_with"]), "",
             "| | accuracy | gap closed |", "|---|---:|---:|",
             "| lower bound (flat) | {} | |".format(_pct(a["lower"])),
             "| upper bound (oracle) | {} | |".format(_pct(a["upper"])),
             "| vanilla Super-Sub | {} | {} |".format(_pct(a["vanilla"]), _pct(h["gap_closed_vanilla"])),
             "| efficient int8 Super-Sub | {} | {} |".format(_pct(a["efficient"]), _pct(h["gap_closed_efficient"])),
             "", "Gap closed = (Super-Sub - lower) / (upper - lower).", "",
             "## Superclass confusion [%] (rows: actual)", "",
             "| | " + " | ".join(rep["superclasses"]) + " |", "|---" * (len(rep["superclasses"]) + 1) + "|"]
    for name, row in zip(rep["superclasses"], rep["confusion_percent"]):
        lines.append("| {} | {} |".format(name, " | ".join("{:.2f}".format(v) for v in row)))
    lines += ["", "![confusion]({})".format(rep["plots"]["confusion"]), "",
              "## Per-superclass accuracy", "", "| superclass | lower | upper | vanilla | efficient |", "|---|---:|---:|---:|---:|"]
    for k, name in enumerate(rep["superclasses"]):
        p = rep["per_superclass_accuracy"]
        lines.append("| {} | {} | {} | {} | {} |".format(name, *(_pct(p[key][k]) for key in ("lower", "upper", "vanilla", "efficient"))))
    lines += ["", "![per-superclass]({})".format(rep["plots"]["per_superclass"]), "",
              "## Deltas and storage per subclass network", "",
              "| superclass | codes changed | fp16 + 7z, no QAT | int8 + 7z, QAT | int8 + zstd, QAT |", "|---|---:|---:|---:|---:|"]
    for name in rep["superclasses"]:
        c = rep["compression"][name]
        lines.append("| {} | {:.1%} | {:.3f} | {:.3f} | {:.3f} |".format(
            name, rep["deltas"][name]["changed_fraction"], c["fp16_7z_no_qat"], c["int8_7z_qat"], c["int8_zstd_qat"]))
    m = rep["storage_per_subclass_network"]
    lines += ["| **mean** | | {:.3f} | {:.3f} | {:.3f} |".format(m["fp16_7z_no_qat"], m["int8_7z_qat"], m["int8_zstd_qat"]), "",
              "Storage in networks: 1 + xN with x from this table (the paper reports x = 0.2).", "",
              "![delta histograms]({})".format(rep["plots"]["delta_histograms"]), "",
              "![compression]({})".format(rep["plots"]["compression"]), ""]
    return "\n".join(lines)


def to_html(rep: dict) -> str:
    """A self-contained page: the Markdown report's tables and images, rendered simply."""
    body = []
    in_table = False
    for line in markdown(rep).splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-:"):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join("<td>{}</td>".format(html.escape(c.replace("**", ""))) for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append("<h1>{}</h1>".format(html.escape(line[2:])))
        elif line.startswith("## "):
            body.append("<h2>{}</h2>".format(html.escape(line[3:])))
        elif line.startswith("!["):
            src = line[line.index("(") + 1:-1]
            body.append('<img src="{}" alt="{}">'.format(html.escape(src), html.escape(src)))
        elif line:
            body.append("<p>{}</p>".format(html.escape(line)))
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}img{max-width:100%}")
    return "<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgetool report</title><style>{}</style></head><body>{}</body></html>\n".format(
        style, "\n".join(body))
