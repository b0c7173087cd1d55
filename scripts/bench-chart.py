#!/usr/bin/env python3
"""Draws BENCHMARKS.md's chart from a `herald-bench run --json` file.

Usage: scripts/bench-chart.py OUT.svg RESULTS.json [RESULTS.json ...]

One panel per headline measurement: the median of Herald's runs beside the median of
the peer's, on a common scale per panel. Standard library only (the chart is SVG).
"""

import json
import statistics
import sys
from html import escape

# (case, metric key, panel title, unit, True if higher is better)
PANELS = [
    ("fanout-1k", "lat_p50_ms", "Fan-out, 1k subscribers × 50 pub/s: latency p50", "ms", False),
    ("fanout-1k", "cpu_us_per_delivery", "Same: server CPU per delivery", "µs", False),
    ("latency", "lat_p99_ms", "1k subscribers, 10 pub/s: latency p99", "ms", False),
    ("broadcast", "last_delivery_p50_ms", "One broadcast to 10k: last delivery", "ms", False),
    ("storm", "caught_up_ms", "Storm of 10k reconnects: all caught up", "ms", False),
    ("storm", "redis_xrange_calls", "Storm: Redis XRANGE calls", "calls", False),
    ("storm", "server_cpu_secs", "Storm: server CPU", "s", False),
    ("idle", "rss_per_conn_kib", "Server memory per idle connection (10k)", "KiB", False),
    ("idle", "rss_after_burst_per_conn_kib", "Server memory per connection after a burst", "KiB", False),
    ("disruption", "replay_p99_ms", "Disruption: replay latency p99", "ms", False),
    ("disruption", "delivered_pct", "Disruption: publications delivered", "%", True),
]

COLORS = {"herald": "#2563eb", "peer": "#f97316"}
LABELS = {"herald": "Herald", "peer": "Socket.IO 4.8 + redis-streams-adapter"}


def medians(report):
    values = {}
    for run in report["runs"]:
        for row in run.get("rows", []):
            v = row["value"]
            if v is None or v != v:  # NaN
                continue
            values.setdefault((run["case"], run["system"], row["key"]), []).append(v)
    return {k: statistics.median(v) for k, v in values.items()}


def fmt(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e4:
        return f"{v / 1e3:.0f} k"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    report = {"runs": []}
    for path in sys.argv[2:]:
        with open(path) as f:
            report["runs"] += json.load(f)["runs"]
    med = medians(report)
    panels = [p for p in PANELS if (p[0], "herald", p[1]) in med and (p[0], "peer", p[1]) in med]
    width, panel_h, bar_h = 760, 74, 20
    top = 60
    height = top + panel_h * len(panels) + 20
    bar_x = 280
    bar_max = width - bar_x - 110
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="22" font-size="15" font-weight="bold">'
        "Herald and the peer, same machine, same Redis (medians)</text>",
    ]
    x = 10
    for system in ("herald", "peer"):
        out.append(f'<rect x="{x}" y="34" width="12" height="12" fill="{COLORS[system]}"/>')
        out.append(f'<text x="{x + 16}" y="44">{escape(LABELS[system])}</text>')
        x += 22 + 7 * len(LABELS[system])
    for i, (case, key, title, unit, higher) in enumerate(panels):
        y = top + i * panel_h
        better = "higher is better" if higher else "lower is better"
        out.append(f'<text x="10" y="{y + 16}" font-weight="bold">{escape(title)}</text>')
        out.append(f'<text x="10" y="{y + 32}" fill="#555">{escape(unit)}, {better}</text>')
        vals = {s: med.get((case, s, key)) for s in ("herald", "peer")}
        scale = max(v for v in vals.values() if v is not None) or 1
        for j, system in enumerate(("herald", "peer")):
            v = vals[system]
            by = y + 4 + j * (bar_h + 4)
            if v is None:
                out.append(f'<text x="{bar_x}" y="{by + 14}" fill="#999">not measured</text>')
                continue
            w = max(1, bar_max * v / scale)
            out.append(
                f'<rect x="{bar_x}" y="{by}" width="{w:.1f}" height="{bar_h}" fill="{COLORS[system]}"/>'
            )
            out.append(f'<text x="{bar_x + w + 6:.1f}" y="{by + 14}">{fmt(v)}</text>')
    out.append("</svg>")
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
