#!/usr/bin/env python3
"""Draws the fan-out latency curve from `herald-bench run --json` files holding the
scale cases (scale-1k, scale-10k, scale-100k).

Usage: scripts/bench-curve.py OUT.svg RESULTS.json [RESULTS.json ...]

For each number of subscribers N: the median over runs of the publication-to-median-
subscriber latency (`p50_ms`) and of the publication-to-last-subscriber latency
(`last_delivery_p50_ms`), on log-log axes. Standard library only (the chart is SVG).
"""

import json
import math
import statistics
import sys
from html import escape

SERIES = [
    ("last_delivery_p50_ms", "publication → last subscriber", "#dc2626"),
    ("p50_ms", "publication → median subscriber", "#2563eb"),
]

W, H = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 90, 40, 60


def points(paths):
    """{N: {key: [values]}} over every Herald run of a scale case."""
    out = {}
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        for run in report["runs"]:
            if not run["case"].startswith("scale-") or run["system"] != "herald":
                continue
            n = run["params"]["n"]
            for row in run["rows"]:
                out.setdefault(n, {}).setdefault(row["key"], []).append(row["value"])
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    data = points(sys.argv[2:])
    ns = sorted(data)
    if not ns:
        sys.exit("no scale-* runs of Herald in the input")
    meds = {
        key: [statistics.median(data[n][key]) for n in ns if key in data[n]]
        for key, _, _ in SERIES
    }
    values = [v for vs in meds.values() for v in vs if v > 0]
    if not values:
        sys.exit("no latency above 0 in the scale runs")
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = max(10 ** math.ceil(math.log10(max(values))), lo * 10)
    nlo = 10 ** math.floor(math.log10(ns[0]))
    nhi = max(10 ** math.ceil(math.log10(ns[-1])), nlo * 10)
    gateways = sorted({int(v) for n in ns for v in data[n].get("gateways", [])})
    topology = f"{'/'.join(map(str, gateways))} gateways" if gateways else "scale cases"

    def x(n):
        return LEFT + (math.log10(n) - math.log10(nlo)) / (math.log10(nhi) - math.log10(nlo)) * (W - LEFT - RIGHT)

    def y(v):
        return H - BOTTOM - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (H - TOP - BOTTOM)

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">'
        f"Herald fan-out latency against subscribers ({topology}, one Redis, HAProxy)</text>",
    ]
    decade = lo
    while decade <= hi:
        svg.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(decade):.1f}" y2="{y(decade):.1f}" stroke="#e5e7eb"/>')
        svg.append(f'<text x="{LEFT - 6}" y="{y(decade) + 4:.1f}" text-anchor="end">{decade:g} ms</text>')
        decade *= 10
    for n in ns:
        svg.append(f'<line x1="{x(n):.1f}" x2="{x(n):.1f}" y1="{TOP}" y2="{H - BOTTOM}" stroke="#e5e7eb"/>')
        svg.append(f'<text x="{x(n):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{n:,}</text>')
    svg.append(f'<text x="{W / 2}" y="{H - 18}" text-anchor="middle">subscribers of the channel</text>')
    for i, (key, label, color) in enumerate(SERIES):
        series = [(n, statistics.median(data[n][key])) for n in ns if key in data[n]]
        svg.append(
            '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
                color, " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in series)
            )
        )
        for n, v in series:
            px, py = x(n), y(v)
            svg.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{color}"/>')
            svg.append(f'<text x="{px + 6:.1f}" y="{py - 6:.1f}" fill="{color}">{v:,.0f} ms</text>')
        svg.append(f'<rect x="{LEFT + 10}" y="{TOP + 8 + i * 18}" width="12" height="3" fill="{color}"/>')
        svg.append(f'<text x="{LEFT + 28}" y="{TOP + 13 + i * 18}">{escape(label)}</text>')
    svg.append("</svg>")
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
