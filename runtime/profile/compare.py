"""``edgetool profile A B``: two profile reports side by side, one report of both.

The comparison report (schema ``edgetool.profile-comparison/1``) holds both profiles whole and the
side-by-side of :func:`compare`: for each, end to end per image, throughput, the resident memory of
what is deployed and the bytes on disk, and B over A for each; where both bundles carry the same
samples, how many of them the two label alike.  A profile measures no accuracy (its samples carry
no labels), so none is compared.
"""

from __future__ import annotations

import html
from typing import Any, Dict, List

from .profile import headline_throughput
from .report import CHECK, HEAD, _html_report, _html_tables, _md_tables, _mib, _ms, _ratio, header_lines
from .report import plot_format, tables, write_reports

COMPARISON = "edgetool.profile-comparison/1"


def _div(a, b):
    return (a / b) if (a is not None and b) else None


def headline(r: dict) -> Dict[str, Any]:
    """The figures :func:`compare` sets side by side, from one report: end to end per image (its first
    engine mode, per-image routing where measured, else the first policy; a flat bundle's one row),
    throughput, resident memory of what is deployed, bytes on disk."""
    mode = next(iter(r["end_to_end"]))
    rows = r["end_to_end"][mode]
    policy = "flat" if "flat" in rows else ("per-image" if "per-image" in rows else next(iter(rows)))
    forms = r.get("memory", {}).get("forms", {})
    resident = forms.get("single" if r.get("model") == "flat" else "efficient", {}).get("resident_bytes")
    b = r["bundle"]
    return {
        "model": "flat" if r.get("model") == "flat" else "super-sub",
        "what": "flat: one network over {} classes".format(b["classes"])
        if r.get("model") == "flat"
        else "super-sub: {} superclasses".format(b["superclasses"]),
        "end_to_end_row": "{} {}".format(mode, policy),
        "end_to_end_median_ms": rows[policy]["per_image_ms"].get("median"),
        "end_to_end_p99_ms": rows[policy]["per_image_ms"].get("p99"),
        "images_per_s_at_batch": headline_throughput(r),
        "resident_bytes": resident,
        "bytes_on_disk": b["bytes_on_disk"],
        "predictions": rows[policy].get("predictions"),
    }


def compare(a: dict, b: dict) -> dict:
    """Two profile reports side by side: each one's headline figures, B over A for every number, and, where
    both bundles carry the same samples, how many of them the two label alike."""
    ha, hb = headline(a), headline(b)
    numbers = ("end_to_end_median_ms", "end_to_end_p99_ms", "images_per_s_at_batch", "resident_bytes", "bytes_on_disk")
    out: Dict[str, Any] = {
        "a": {k: v for k, v in ha.items() if k != "predictions"},
        "b": {k: v for k, v in hb.items() if k != "predictions"},
        "b_over_a": {k: _div(hb[k], ha[k]) for k in numbers},
        "same_labels": None,
    }
    same = a["bundle"].get("samples_sha256") and a["bundle"].get("samples_sha256") == b["bundle"].get("samples_sha256")
    pa, pb = ha["predictions"], hb["predictions"]
    if same and pa and pb and len(pa) == len(pb):
        out["same_labels"] = {"agree": sum(x[1] == y[1] for x, y in zip(pa, pb)), "of": len(pa)}
    return out


def comparison_report(a: dict, b: dict) -> dict:
    """Both profiles whole, and the side-by-side of :func:`compare`."""
    return {"schema": COMPARISON, "comparison": compare(a, b), "reports": [a, b]}


def comparison_table(c: dict) -> tuple:
    """The side-by-side as (title, header, rows): A's figure, B's, and B over A."""
    a, b, q = c["a"], c["b"], c["b_over_a"]

    def row(label, key, shown):
        both = [shown(x[key]) if x[key] is not None else "-" for x in (a, b)]
        return [label] + both + [_ratio(q[key])]

    rows = [
        ["bundle", a["what"], b["what"], ""],
        ["end-to-end row", a["end_to_end_row"], b["end_to_end_row"], ""],
        row("end to end per image, median [ms]", "end_to_end_median_ms", _ms),
        row("end to end per image, p99 [ms]", "end_to_end_p99_ms", _ms),
        row("throughput at the batch [images/s]", "images_per_s_at_batch", "{:.1f}".format),
        row("resident memory of what is deployed", "resident_bytes", _mib),
        row("bytes on disk", "bytes_on_disk", _mib),
    ]
    same = c.get("same_labels")
    if same:
        rows.append(["same samples, same label", "{} of {} (A and B)".format(same["agree"], same["of"]), "", ""])
    return ("A and B side by side", ["", "A", "B", "B / A"], rows)


def comparison_lines(c: dict) -> List[str]:
    """The side-by-side as aligned text lines (what ``edgetool profile A B`` prints)."""
    _, head, rows = comparison_table(c)
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    return ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head] + rows]


def to_markdown(r: dict) -> str:
    lines = ["# edgetool profile: two bundles side by side", ""] + _md_tables([comparison_table(r["comparison"])], "##")
    for tag, rep in zip("AB", r["reports"]):
        lines += ["## {}: {}".format(tag, rep["bundle"]["path"]), ""] + ["- " + h for h in header_lines(rep)] + [""]
        lines += _md_tables(tables(rep), "###")
    return "\n".join(lines)


def to_html(r: dict, plot_format_: str = "auto") -> str:
    fmt = plot_format(plot_format_)
    parts = [HEAD, "<h1>edgetool profile: two bundles side by side</h1>"]
    parts += _html_tables([comparison_table(r["comparison"])], "h2")
    for tag, rep in zip("AB", r["reports"]):
        parts.append("<h2>{}: {}</h2>".format(tag, html.escape(rep["bundle"]["path"])))
        parts += _html_report(rep, fmt, "h3", tag.lower() + "-")  # plot ids apart: plot-a-cdf, plot-b-cdf
    return "\n".join(parts + [CHECK, "</body></html>"])


def write_comparison(r: dict, out_dir: str, plots: str = "auto") -> Dict[str, str]:
    """profile.json, profile.md and profile.html of the comparison report *r* into *out_dir*."""
    return write_reports(r, out_dir, plots, to_markdown, to_html)
