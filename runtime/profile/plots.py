"""The four plots of a profile report, as specs, rendered to PNG (matplotlib) or SVG.

* latency breakdown: the median of every stage of a switch and of inference;
* latency CDFs: switch, inference and end-to-end per image for each routing policy;
* memory: resident bytes of the single network, efficient and vanilla Super-Sub;
* storage against N: one flat network, vanilla N+1 networks, efficient base + N deltas.

A flat bundle's report has the first two (its one network's inference and end to end): it has
no vanilla form to weigh its memory against and no N to grow its storage with.

matplotlib comes with the ``train`` extra.  Where it is absent (a Jetson with the runtime
only), the same plots are drawn as inline SVG by :mod:`.svg`, so the HTML page always
holds every plot.
"""

from __future__ import annotations

import base64
import io
from typing import List

from . import svg

BREAKDOWN = (
    "delta_read",
    "sha256",
    "decode",
    "sha256_decoded",
    "add",
    "apply",
    "h2d_kernel",
    "refit",
    "switch_to_subclass",
    "switch_to_base",
    "superclass_inference",
    "subclass_inference",
    "inference",
)


def specs(report: dict) -> List[dict]:
    out = [_breakdown(report), _cdfs(report)]
    if report.get("model") == "flat":
        return out
    if "memory" in report:
        forms = report["memory"]["forms"]
        out.append(
            {
                "id": "memory",
                "kind": "bars",
                "title": "Resident memory (fresh process per form)",
                "labels": ["single network", "efficient", "vanilla (N+1)"],
                "values": [forms[f]["resident_bytes"] / 2**20 for f in ("single", "efficient", "vanilla")],
                "ylabel": "MiB",
            }
        )
    rows = report["storage"]
    xs = [r["n"] for r in rows]
    out.append(
        {
            "id": "storage",
            "kind": "lines",
            "title": "Storage against N superclasses",
            "xlabel": "N",
            "ylabel": "MiB",
            "series": {k: (xs, [r[k] / 2**20 for r in rows]) for k in ("single", "vanilla", "efficient")},
        }
    )
    return out


def _breakdown(report: dict) -> dict:
    stages = report["stages"]
    labels, values = [], []
    for name in BREAKDOWN:
        key = next((k for k in stages if k == name or (name == "decode" and k.startswith("decode_"))), None)
        if key and stages[key].get("count"):
            labels.append(key)
            values.append(stages[key]["median"])
    return {
        "id": "breakdown",
        "kind": "bars",
        "title": "Latency breakdown (median per stage)",
        "labels": labels,
        "values": values,
        "ylabel": "ms",
    }


def _cdfs(report: dict) -> dict:
    series = {}
    for name in ("switch_to_subclass", "superclass_inference", "inference", "cold_load"):
        s = report["stages"].get(name, {})
        if s.get("cdf"):
            series[name] = s["cdf"]
    for mode, policies in report.get("end_to_end", {}).items():
        for policy, row in policies.items():
            if row["per_image_ms"].get("cdf"):
                series["{} {}".format(policy, mode)] = row["per_image_ms"]["cdf"]
    lines = {k: (v, [i / (len(v) - 1) for i in range(len(v))]) for k, v in series.items()}
    return {
        "id": "cdf",
        "kind": "lines",
        "title": "Latency CDFs",
        "xlabel": "ms",
        "ylabel": "fraction",
        "series": lines,
    }


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def render(spec: dict, fmt: str) -> str:
    """An HTML fragment holding the plot: an inline PNG (``png``) or inline SVG (``svg``)."""
    if fmt == "svg":
        return svg.bars(spec) if spec["kind"] == "bars" else svg.lines(spec)
    data = base64.b64encode(_png(spec)).decode("ascii")
    return '<img alt="{}" src="data:image/png;base64,{}">'.format(spec["title"], data)


def _png(spec: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=90)
    try:
        if spec["kind"] == "bars":
            ax.bar(range(len(spec["values"])), spec["values"], color="#1f77b4")
            ax.set_xticks(range(len(spec["labels"])))
            ax.set_xticklabels(spec["labels"], rotation=35, ha="right", fontsize=8)
        else:
            for name, (xs, ys) in spec["series"].items():
                ax.plot(xs, ys, label=name)
            ax.set_xlabel(spec["xlabel"])
            if spec["id"] == "cdf":
                ax.set_xscale("log")
            ax.legend(fontsize=7)
        ax.set_ylabel(spec["ylabel"])
        ax.set_title(spec["title"], fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
