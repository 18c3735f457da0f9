"""Profile reports: strict JSON, Markdown, and one self-contained HTML page with plots.

Every writer is atomic (a temporary sibling, then a rename).
"""

from __future__ import annotations

import html
import json
import os
from typing import Dict, List

from ..files import cannot_write, write_bytes_atomic
from . import plots

COLUMNS = ("count", "mean", "median", "p90", "p95", "p99", "max")
FILES = {"json": "profile.json", "md": "profile.md", "html": "profile.html"}


def to_json(report: dict) -> str:
    return json.dumps(report, indent=1, allow_nan=False, sort_keys=False) + "\n"


def _ms(v) -> str:
    return "-" if v is None else ("{:.3f}".format(v) if v < 100 else "{:.1f}".format(v))


def _mib(n) -> str:
    return "{:.2f} MiB".format(n / 2**20)


def _ratio(v) -> str:
    return "-" if v is None else "{:.2f}x".format(v)


def tables(r: dict) -> List[tuple]:
    """(title, header, rows) of every table, shared by the Markdown and HTML writers (a flat bundle's:
    its one network's, with no codecs, ratios of a switch or projections)."""
    if r.get("model") == "flat":
        return [_stage_table(r), _end_to_end_table(r), _throughput_table(r)] + (
            [_memory_table(r)] if "memory" in r else []
        )
    out = [_stage_table(r), _end_to_end_table(r), _throughput_table(r), _codec_table(r)]
    if "memory" in r:
        out.append(_memory_table(r))
    out.append(("Ratios", ["ratio", "value"], [[k, _ratio(v)] for k, v in r["ratios"].items()]))
    out.append(_projection_table(r))
    return out


def _stage_table(r: dict) -> tuple:
    rows = []
    for name, s in r["stages"].items():
        if s.get("count"):
            rows.append([name] + [str(s["count"])] + [_ms(s[c]) for c in COLUMNS[1:]])
        else:
            rows.append([name, "0"] + ["-"] * (len(COLUMNS) - 1))
    return ("Latency per stage [ms]", ["stage"] + list(COLUMNS), rows)


def _end_to_end_table(r: dict) -> tuple:
    rows = []
    for mode, policies in r["end_to_end"].items():
        reference = policies.get("per-image", {}).get("predictions")
        for policy, row in policies.items():
            s = row["per_image_ms"]
            rows.append(
                [
                    mode,
                    policy,
                    _ms(s["mean"]),
                    _ms(s["median"]),
                    _ms(s["p90"]),
                    _ms(s["p99"]),
                    _ms(s["max"]),
                    "{:.1f}".format(row["images_per_s"]),
                    _agreement(row.get("predictions"), reference),
                ]
            )
    return (
        "End to end per image [ms]",
        ["engine mode", "policy", "mean", "median", "p90", "p99", "max", "images/s", "labels as per-image"],
        rows,
    )


def _agreement(preds, reference) -> str:
    """How many of the images a policy labelled as per-image did ("-" without both)."""
    if not preds or not reference or len(preds) != len(reference):
        return "-"
    return "{}/{}".format(sum(list(p) == list(q) for p, q in zip(preds, reference)), len(preds))


def _throughput_table(r: dict) -> tuple:
    t = r["throughput"]
    if r.get("model") == "flat":
        rows = [["flat network", "{:.1f}".format(t["flat_images_per_s"])]]
    else:
        rows = [
            ["two-stage (superclass-batched)", "{:.1f}".format(t["two_stage_images_per_s"])],
            ["single base network", "{:.1f}".format(t["single_throughput_images_per_s"])],
        ]
    return ("Throughput at batch {}".format(r["settings"]["batch"]), ["form", "images/s"], rows)


def _codec_table(r: dict) -> tuple:
    return (
        "Codecs (first delta)",
        ["codec", "stored bytes", "decode median [ms]", "decode p99 [ms]"],
        [
            [name, str(c["stored_bytes"]), _ms(c["decode_ms"]["median"]), _ms(c["decode_ms"]["p99"])]
            for name, c in r["codecs"].items()
        ],
    )


def _projection_table(r: dict) -> tuple:
    return (
        "Estimates for other devices (not measured)",
        ["profile", "CPU", "DRAM GB/s", "read+decode [ms]", "H2D [ms]", "add kernel [ms]", "switch w/o refit [ms]"],
        [
            [
                p["profile"] + " (estimate)",
                p["cpu"],
                "{:.1f}".format(p["mem_gbs"]),
                _ms(p["read_decode_ms"]),
                _ms(p["h2d_ms"]),
                _ms(p["add_kernel_ms"]),
                _ms(p["switch_ms_without_refit"]),
            ]
            for p in r["projections"]
        ],
    )


def _memory_table(r: dict) -> tuple:
    f = r["memory"]["forms"]
    single = max(1, f["single"]["resident_bytes"])
    rows = [
        [
            name,
            _mib(f[name]["resident_bytes"]),
            _mib(f[name]["peak_rss_bytes"]),
            _mib(f[name]["weight_buffer_bytes"]),
            _ratio(f[name]["resident_bytes"] / single),
        ]
        for name in ("single", "efficient", "vanilla")
        if name in f
    ]
    return (
        "Memory (each form in a fresh process)",
        ["form", "resident", "peak RSS", "weight buffers", "resident / single"],
        rows,
    )


def bundle_line(r: dict) -> str:
    b = r["bundle"]
    if r.get("model") == "flat":
        return "bundle: {} (flat: one network over {} classes, no routing, no switch; {} on disk, base.onnx {})".format(
            b["path"], b["classes"], _mib(b["bytes_on_disk"]), _mib(b["base_onnx_bytes"])
        )
    changed = b.get("changed_codes_fraction")
    return "bundle: {} ({} superclasses, codec {}, {} on disk, base.onnx {}, refit buffer {}{})".format(
        b["path"],
        b["superclasses"],
        b["codec"],
        _mib(b["bytes_on_disk"]),
        _mib(b["base_onnx_bytes"]),
        _mib(b["refit_bytes"]),
        "" if changed is None else ", {:.0%} of codes changed".format(changed),
    )


def header_lines(r: dict) -> List[str]:
    return [
        "machine: {}".format(r["machine"]),
        "backend: {} ({}), Python {}, edgetool {}".format(
            r["backend"], ", ".join(r.get("providers") or []), r["python"], r["edgetool_version"]
        ),
        bundle_line(r),
        "settings: warm-up {warmup}, {iterations} iterations, batch {batch}".format(**r["settings"]),
        jetson_line(r["jetson"]),
    ]


def jetson_line(j: dict) -> str:
    """The Jetson block in words: model, power mode, clocks, tegrastats means, energy per image."""
    if not j.get("available"):
        return "jetson: no Jetson telemetry here ({})".format(j.get("reason", "unknown"))
    pinned = j.get("jetson_clocks")
    clocks = "pinned" if pinned is True else "not pinned" if pinned is False else "unknown"
    parts = ["{}; nvpmodel {}; clocks {}".format(j.get("model"), j.get("nvpmodel") or "unknown", clocks)]
    t = j.get("tegrastats") or {}
    if "reason" in t:
        return "jetson: " + "; ".join(parts + ["tegrastats: " + t["reason"]])
    parts.append("tegrastats {} samples in {:.1f} s".format(t["samples"], t["seconds"]))
    if t.get("rejected_lines"):
        parts.append("{} line(s) rejected ({})".format(t["rejected_lines"], t.get("rejected_because")))
    if t.get("ram_used_mb") is not None:
        parts.append("RAM {} / {} MB".format(t["ram_used_mb"], t["ram_total_mb"]))
    for key, label in (("gr3d_load_percent", "GPU"), ("emc_load_percent", "EMC")):
        if t.get(key) is not None:
            parts.append("{} {:.0f}%".format(label, t[key]))
    if t.get("power_mw"):
        parts.append("power " + ", ".join("{} {:.0f} mW".format(n, v) for n, v in t["power_mw"].items()))
    if t.get("total_power"):
        parts.append("board {:.0f} mW ({})".format(t["total_power"]["mw"], t["total_power"]["from"]))
    if j.get("energy_mj_per_image") is not None:
        parts.append("{:.2f} mJ per image ({})".format(j["energy_mj_per_image"], j["energy_at"]))
    return "jetson: " + "; ".join(parts)


def _md_tables(tabs, level: str) -> List[str]:
    lines: List[str] = []
    for title, head, rows in tabs:
        lines += [level + " " + title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return lines


def to_markdown(r: dict) -> str:
    lines = ["# edgetool profile", ""] + ["- " + h for h in header_lines(r)] + [""]
    return "\n".join(lines + _md_tables(tables(r), "##"))


CHECK = """<script>
window.addEventListener('load', function () {
  var figs = document.querySelectorAll('figure.plot'), ok = 0;
  figs.forEach(function (f) {
    var img = f.querySelector('img'), svg = f.querySelector('svg');
    var drawn = img ? (img.complete && img.naturalWidth > 0) : (svg && svg.getBoundingClientRect().width > 0);
    f.setAttribute('data-rendered', drawn ? 'yes' : 'no');
    if (drawn) ok++;
  });
  document.body.setAttribute('data-plots', figs.length);
  document.body.setAttribute('data-plots-rendered', ok);
});
</script>"""


def _html_tables(tabs, tag: str) -> List[str]:
    e, parts = html.escape, []
    for title, head, rows in tabs:
        heads = "".join("<th>{}</th>".format(e(h)) for h in head)
        parts.append("<{0}>{1}</{0}><table><tr>{2}</tr>".format(tag, e(title), heads))
        parts += ["<tr>{}</tr>".format("".join("<td>{}</td>".format(e(c)) for c in row)) for row in rows]
        parts.append("</table>")
    return parts


def _html_report(r: dict, fmt: str, tag: str = "h2", prefix: str = "") -> List[str]:
    """One report's header list, plots (ids ``plot-<prefix><id>``) and tables."""
    parts = ["<ul>"] + ["<li>{}</li>".format(html.escape(h)) for h in header_lines(r)] + ["</ul>"]
    for spec in plots.specs(r):
        fig = "<figure class='plot' id='plot-{}{}'>{}</figure>"
        parts.append(fig.format(prefix, spec["id"], plots.render(spec, fmt)))
    return parts + _html_tables(tables(r), tag)


HEAD = (
    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgetool profile</title>"
    "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
    "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child{text-align:left}figure{display:inline-block;margin:0.5em}</style></head><body>"
)


def plot_format(requested: str) -> str:
    return requested if requested != "auto" else ("png" if plots.have_matplotlib() else "svg")


def to_html(r: dict, plot_format_: str = "auto") -> str:
    parts = [HEAD, "<h1>edgetool profile</h1>"] + _html_report(r, plot_format(plot_format_))
    return "\n".join(parts + [CHECK, "</body></html>"])


def write_reports(r: dict, out_dir: str, plot_format: str = "auto", md=to_markdown, page=to_html) -> Dict[str, str]:
    """Write profile.json, profile.md and profile.html (rendered by *md* and *page*) into *out_dir*; return
    their paths."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise cannot_write(out_dir, exc) from None
    paths = {k: os.path.join(out_dir, v) for k, v in FILES.items()}
    write_bytes_atomic(paths["json"], to_json(r).encode("utf-8"))
    write_bytes_atomic(paths["md"], md(r).encode("utf-8"))
    write_bytes_atomic(paths["html"], page(r, plot_format).encode("utf-8"))
    return paths
