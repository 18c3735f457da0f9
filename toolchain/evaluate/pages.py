"""The Markdown and HTML pages of ``edgetool evaluate``'s report."""

from __future__ import annotations

from typing import List

KINDS = [
    ("lower", "lower bound (flat)", "#d62728"),
    ("control", "control (flat, true superclass)", "#9467bd"),
    ("upper", "upper bound (true superclass)", "#2ca02c"),
    ("vanilla", "vanilla fp32 Super-Sub", "#1f77b4"),
    ("efficient", "efficient int8 Super-Sub", "#ff7f0e"),
    ("flat_budget", "flat int8, equal training budget", "#7f7f7f"),
    ("flat_wide", "flat int8, equal inference cost", "#17becf"),
]


# The network (and the way it was run) behind every figure of the report.
NETWORKS = {
    "lower": "flat network over all fine classes, fp32 (torch)",
    "control": "flat network, fp32 (torch), restricted to the classes of the true superclass",
    "upper": "vanilla fp32 subclass networks (torch), each given the true superclass",
    "vanilla": "superclass network routes, vanilla fp32 subclass networks classify (torch)",
    "efficient": "the bundle: int8 base network routes, int8 base + delta networks classify",
    "flat_budget": "flat network trained for the Super-Sub pipeline's image passes, QAT int8 (torch)",
    "flat_wide": "wider flat network at Super-Sub's FLOPs per image, same image passes, QAT int8 (torch)",
    "confusion": "superclass (base) network, fp32 (torch)",
    "deltas": "int8 code deltas of the QAT subclass networks against the QAT base network",
    "x": "stored bytes of each delta in the bundle / stored bytes of base.onnx",
}


def _pct(v):
    return "n/a" if v is None or v != v else "{:.2f}%".format(100 * v)


def _gap(g):
    return "n/a ({})".format(g["reason"]) if g["value"] is None else "{:.0%}".format(g["value"])


def _accuracy_lines(rep: dict) -> List[str]:
    """The title, the accuracy table against the bounds, storage and routing."""
    a, g, r = rep["accuracy"], rep["gap_closed"], rep["routing"]
    names = rep["superclasses"]
    bb = rep["bundle_bytes"]
    return (
        [
            "# Super-Sub evaluation: {} ({})".format(rep["dataset"], rep["model"]),
            "",
            "{} test images; superclasses: {}. Base network started from: {}; delta budget: {}.".format(
                rep["test_images"], ", ".join(names), rep["base_init"], rep["delta_budget"]
            ),
            "Efficient: measured with {}. Bundle: {} bytes in all (base.onnx {}, deltas {}, codec {}).".format(
                rep["efficient_measured_with"], bb["files"], bb["base"], bb["deltas"], rep["codec"]
            ),
            "Training augmentation: {} (random-crop padding {}; {}). Input: {} ({}).".format(
                rep["augmentation"]["augment"],
                rep["augmentation"]["pad"],
                rep["augmentation"]["why"],
                "x".join(str(v) for v in rep["input"]["shape"]),
                rep["input"]["channels_from"],
            ),
            "",
            "| | accuracy | gap closed |",
            "|---|---:|---:|",
            "| lower bound: flat network | {} | |".format(_pct(a["lower"])),
            "| control: flat network, true superclass's classes only | {} | {} |".format(
                _pct(a["control"]), _gap(g["control"])
            ),
            "| upper bound: vanilla subclass networks, true superclass | {} | |".format(_pct(a["upper"])),
            "| vanilla fp32 Super-Sub | {} | {} |".format(_pct(a["vanilla"]), _gap(g["vanilla"])),
            "| efficient int8 Super-Sub | {} | {} |".format(_pct(a["efficient"]), _gap(g["efficient"])),
            "| flat int8, equal training budget | {} | |".format(_pct(a["flat_budget"])),
            "| flat int8, equal inference cost | {} | |".format(_pct(a["flat_wide"])),
            "",
            "**Verdict.** {} The better flat control was chosen on the {}.".format(
                rep["verdict"]["message"], rep["verdict"]["chosen_on"]
            ),
            "",
            "| row | training image passes | FLOPs per image |",
            "|---|---:|---:|",
        ]
        + [
            "| {} | {} | {} |".format(k, rep["cost"][k]["image_passes"], rep["cost"][k]["flops_per_image"])
            for k in a
            if k in rep["cost"]
        ]
        + [
            "",
            "Gap closed = (Super-Sub - lower) / (upper - lower). x = stored delta bytes / stored bytes of base.onnx: "
            "{:.3f} on average.".format(rep["x"]["mean"]),
            "",
            "Networks: " + "; ".join("{}: {}".format(k, v) for k, v in rep["networks"].items() if k in a) + ".",
            "",
            "Routing (superclass accuracy): base network fp32 {}, int8 {}; "
            "the flat network's implied superclass {}.".format(
                _pct(r["base_fp32"]), _pct(r.get("base_int8")), _pct(r["flat"])
            ),
        ]
    )


def markdown(rep: dict) -> str:
    names = rep["superclasses"]
    lines = _accuracy_lines(rep) + [
        "",
        "## Superclass confusion [%] of the base network (rows: actual)",
        "",
        "| | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for name, row in zip(names, rep["confusion_percent"]):
        lines.append("| {} | {} |".format(name, " | ".join("{:.2f}".format(v) for v in row)))
    lines += [
        "",
        "![confusion]({})".format(rep["plots"]["confusion"]),
        "",
        "## Per-superclass accuracy",
        "",
        "| superclass | " + " | ".join(k for k, _, _ in KINDS) + " |",
        "|---" + "|---:" * len(KINDS) + "|",
    ]
    for k, name in enumerate(names):
        p = rep["per_superclass_accuracy"]
        lines.append("| {} | {} |".format(name, " | ".join(_pct(p[key][k]) for key, _, _ in KINDS)))
    lines += ["", "![per-superclass]({})".format(rep["plots"]["per_superclass"]), ""] + _storage_lines(rep)
    return "\n".join(lines + _routing_lines(rep.get("routing_policies")) + _adaptive_lines(rep))


def _adaptive_lines(rep: dict) -> List[str]:
    """Adaptive network selection (Algorithm 2): the network chosen per cluster on validation."""
    a = rep.get("adaptive")
    if not a:
        return []
    cands = a["candidates"]
    lines = [
        "",
        "## Adaptive network selection (Chennupati et al., Algorithm 2)",
        "",
        "Each cluster's network chosen by its validation accuracy on the cluster's classes.",
        "",
        "| superclass | chosen | " + " | ".join("{} (val)".format(c) for c in cands) + " |",
        "|---|---" + "|---:" * len(cands) + "|",
    ]
    for name in rep["superclasses"]:
        acc = a["validation_accuracy"][name]
        lines.append("| {} | {} | {} |".format(name, a["choice"][name], " | ".join(_pct(acc[c]) for c in cands)))
    t = a["routing"]
    lines += [
        "",
        "Test accuracy, top-1 routing: {} (vanilla: {}); gated top-{} (gate {}, beta {}): {} at {:.3f} extra "
        "switches / image.".format(
            _pct(a["top1_accuracy"]),
            _pct(rep["accuracy"]["vanilla"]),
            t["k"],
            t["gate"],
            t.get("beta", 1.0),
            _pct(t["accuracy"]),
            t["extra_switches_per_image"],
        ),
    ]
    return lines


def _routing_lines(rp) -> List[str]:
    """Gated top-k against top-1 routing (vanilla networks): what a second route recovers, at what cost."""
    if not rp:
        return []
    t, a = rp["topk"], rp["all_superclasses"]
    frac = (
        "n/a ({})".format(t["recovered_fraction_reason"])
        if t["recovered_fraction"] is None
        else "{:.0%}".format(t["recovered_fraction"])
    )
    return [
        "",
        "## Routing that can recover ({})".format(rp["networks"]),
        "",
        "| policy | accuracy | extra switches / image |",
        "|---|---:|---:|",
        "| top-1 (per-image) | {} | 0 |".format(_pct(t["top1_accuracy"])),
        "| gated top-{} (gate {}, beta {}) | {} | {:.3f} |".format(
            t["k"], t["gate"], t.get("beta", 1.0), _pct(t["accuracy"]), t["extra_switches_per_image"]
        ),
        "| every superclass (equation 2) | {} | {:.3f} |".format(_pct(a["accuracy"]), a["extra_switches_per_image"]),
        "",
        "Stage-1 errors (routed where the class is not served): {}; recovered by gated top-{}: {} ({}); "
        "newly wrong: {}; recoverable at this gate (a second route's subclass network outputs the class): {}. "
        "Gate and beta (routes compete by p_super^beta x p_sub) chosen on: {}.".format(
            t["stage1_errors"],
            t["k"],
            t["recovered"],
            frac,
            t["lost"],
            t.get("recoverable", "n/a"),
            rp["gate_chosen_on"],
        ),
    ]


def _storage_lines(rep: dict) -> List[str]:
    names = rep["superclasses"]
    lines = [
        "## Deltas and storage per subclass network",
        "",
        "| superclass | codes changed | x (bundle) | fp16 + 7z, no QAT |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        c = rep["compression"][name]
        lines.append(
            "| {} | {:.1%} | {:.3f} | {:.3f} |".format(
                name, rep["deltas"][name]["changed_fraction"], c["bundle_x"], c["fp16_7z_no_qat"]
            )
        )
    lines += [
        "",
        "Storage in networks: 1 + xN (the paper reports x = 0.2).",
        "",
        "![delta histograms]({})".format(rep["plots"]["delta_histograms"]),
        "",
        "![compression]({})".format(rep["plots"]["compression"]),
        "",
    ]
    return lines


def to_html(rep: dict) -> str:
    """A self-contained page of the Markdown report (Python-Markdown with its tables extension)."""
    import markdown as md

    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    body = md.markdown(markdown(rep), extensions=["tables"])
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgetool report</title>"
        "<style>{}</style></head><body>{}</body></html>\n"
    ).format(style, body)
