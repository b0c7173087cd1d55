#!/usr/bin/env python3
"""Draws the reconnects per second during the `rolling` case (every gateway restarted in
turn under load), one line per system, from `herald-bench run --json` files.

Usage: scripts/bench-rolling.py OUT.svg RESULTS.json [RESULTS.json ...]

Each line is, second by second, the median over that system's runs of the clients'
reconnects in that second (the `reconnects_per_s` series). Second 0 is when publishing
started; the first gateway is stopped 8 s later. Standard library only (SVG).
"""

import json
import statistics
import sys
from html import escape

COLORS = {"herald": "#2563eb", "peer": "#dc2626"}
LABELS = {"herald": "Herald (paced drain)", "peer": "Socket.IO (closes at once)"}

W, H = 720, 380
LEFT, RIGHT, TOP, BOTTOM = 70, 30, 40, 60


def series(paths):
    """{system: [[per-second values of one run], ...]} over every rolling run."""
    out = {}
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        for run in report["runs"]:
            if run["case"] != "rolling":
                continue
            for name, values in run.get("series", []):
                if name == "reconnects_per_s":
                    out.setdefault(run["system"], []).append(values)
    return out


def median_curve(runs):
    """The median of each second over the runs that reached it."""
    length = max(len(r) for r in runs)
    return [statistics.median([r[i] for r in runs if i < len(r)]) for i in range(length)]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    data = {system: median_curve(runs) for system, runs in series(sys.argv[2:]).items()}
    if not data:
        sys.exit("no rolling runs with a reconnects_per_s series in the input")
    secs = max(len(c) for c in data.values())
    top = max(max(c) for c in data.values()) or 1
    step = 10 ** len(str(int(top))) // 10 or 1
    while top / step > 8:
        step *= 2
    ymax = (int(top // step) + 1) * step

    def x(t):
        return LEFT + t / max(secs, 1) * (W - LEFT - RIGHT)

    def y(v):
        return H - BOTTOM - v / ymax * (H - TOP - BOTTOM)

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">'
        "Reconnects per second while three gateways are restarted in turn (median of runs)</text>",
    ]
    for v in range(0, ymax + 1, step):
        svg.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e7eb"/>')
        svg.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,}</text>')
    for t in range(0, secs + 1, 5):
        svg.append(f'<text x="{x(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{t} s</text>')
    svg.append(f'<text x="{W / 2}" y="{H - 18}" text-anchor="middle">seconds since publishing started</text>')
    for i, (system, curve) in enumerate(sorted(data.items())):
        color = COLORS.get(system, "#111827")
        points = " ".join(f"{x(t + 1):.1f},{y(v):.1f}" for t, v in enumerate(curve))
        svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        peak = max(curve)
        svg.append(f'<rect x="{LEFT + 10}" y="{TOP + 8 + i * 18}" width="12" height="3" fill="{color}"/>')
        svg.append(
            f'<text x="{LEFT + 28}" y="{TOP + 13 + i * 18}">'
            f"{escape(LABELS.get(system, system))}: highest second {peak:,.0f}/s</text>"
        )
    svg.append("</svg>")
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
