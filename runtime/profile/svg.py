"""Plots as inline SVG, without matplotlib (the device side may not have it).

Two chart kinds cover every plot of the profile report: bars and lines (see
:mod:`.plots` for the specs they draw).
"""

from __future__ import annotations

from html import escape
from typing import List

W, H = 640, 320
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 30, 70
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _axes(title: str, ylabel: str, ymax: float) -> List[str]:
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" role="img">'.format(
            W, H, W, H
        ),
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="{}" y="18" font-size="14" text-anchor="middle">{}</text>'.format(W // 2, escape(title)),
        '<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="black"/>'.format(LEFT, TOP, TOP + ph),
        '<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="black"/>'.format(LEFT, TOP + ph, LEFT + pw),
        '<text x="14" y="{}" font-size="11" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>'.format(
            TOP + ph // 2, TOP + ph // 2, escape(ylabel)
        ),
    ]
    for i in range(5):
        v = ymax * i / 4
        y = TOP + ph - ph * i / 4
        out.append(
            '<text x="{}" y="{:.1f}" font-size="10" text-anchor="end">{}</text>'.format(LEFT - 4, y + 3, _fmt(v))
        )
    return out


def _fmt(v: float) -> str:
    return "{:.3g}".format(v)


def bars(spec: dict) -> str:
    labels, values = spec["labels"], spec["values"]
    ymax = max(values + [1e-12]) * 1.1
    out = _axes(spec["title"], spec["ylabel"], ymax)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = pw / max(1, len(values))
    for i, (label, v) in enumerate(zip(labels, values)):
        h = ph * v / ymax
        x = LEFT + i * slot + slot * 0.15
        out.append(
            '<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}"><title>{}: {}</title></rect>'.format(
                x, TOP + ph - h, slot * 0.7, h, COLORS[i % len(COLORS)], escape(label), _fmt(v)
            )
        )
        cx = x + slot * 0.35
        out.append(
            '<text x="{0:.1f}" y="{1}" font-size="10" text-anchor="end" transform="rotate(-35 {0:.1f} {1})">'
            "{2}</text>".format(cx, TOP + ph + 12, escape(label))
        )
    out.append("</svg>")
    return "\n".join(out)


def lines(spec: dict) -> str:
    series = spec["series"]
    xmax = max([max(xs) for xs, _ in series.values()] + [1e-12])
    ymax = max([max(ys) for _, ys in series.values()] + [1e-12]) * 1.05
    out = _axes(spec["title"], spec["ylabel"], ymax)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    for i, (name, (xs, ys)) in enumerate(series.items()):
        pts = " ".join("{:.1f},{:.1f}".format(LEFT + pw * x / xmax, TOP + ph - ph * y / ymax) for x, y in zip(xs, ys))
        color = COLORS[i % len(COLORS)]
        out.append('<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>'.format(pts, color))
        out.append(
            '<text x="{}" y="{}" font-size="10" fill="{}">{}</text>'.format(
                LEFT + 8, TOP + 12 + 12 * i, color, escape(name)
            )
        )
    out.append(
        '<text x="{}" y="{}" font-size="11" text-anchor="middle">{} (0 to {})</text>'.format(
            LEFT + pw // 2, H - 20, escape(spec["xlabel"]), _fmt(xmax)
        )
    )
    out.append("</svg>")
    return "\n".join(out)
