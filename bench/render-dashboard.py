#!/usr/bin/env python3
"""Renders docs/grafana/tenant-storage-operator.json without Grafana or Prometheus, from
/metrics scrapes taken during a benchmark, to see the dashboard's panels on real data.

    bench/render-dashboard.py SCRAPES_DIR OUT.png

SCRAPES_DIR holds one Prometheus text scrape per file, named `<unix seconds>.prom` (for example
`while curl -s http://127.0.0.1:PORT/metrics > DIR/$(date +%s).prom; do sleep 15; done`).
Evaluates the subset of PromQL the dashboard uses: `sum|min|max [by (...)] (...)`, `rate` and
`increase` over a range, `histogram_quantile`, and label matchers (`job` is ignored: one
process). Needs matplotlib (`pip install matplotlib`).
"""
import json
import math
import os
import re
import sys
from collections import defaultdict

DASHBOARD = os.path.join(os.path.dirname(__file__), "..", "docs", "grafana", "tenant-storage-operator.json")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def load(directory):
    """[(time, {(name, frozenset(labels)): value})] in time order."""
    scrapes = []
    for f in sorted(os.listdir(directory)):
        if not f.endswith(".prom"):
            continue
        series = {}
        with open(os.path.join(directory, f)) as text:
            for line in text:
                m = SAMPLE.match(line.strip())
                if not m or line.startswith("#"):
                    continue
                labels = frozenset(LABEL.findall(m.group(2) or ""))
                series[(m.group(1), labels)] = float(m.group(3))
        scrapes.append((int(f.split(".")[0]), series))
    return scrapes


def seconds(window):
    if window == "$__rate_interval":
        return 60
    return int(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]


def select(selector, series):
    m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?', selector.strip())
    name, matchers = m.group(1), LABEL.findall(m.group(2) or "")
    wanted = [(k, v) for k, v in matchers if k != "job"]
    return {labels: v for (n, labels), v in series.items()
            if n == name and all((k, v) in labels for k, v in wanted)}


def evaluate(expr, scrapes, i):
    """The instant vector of `expr` at scrape i: {labels: value}."""
    expr = expr.strip()
    m = re.fullmatch(r'histogram_quantile\(([\d.]+),\s*(.*)\)', expr)
    if m:
        q, by_le = float(m.group(1)), evaluate(m.group(2), scrapes, i)
        groups = defaultdict(list)
        for labels, v in by_le.items():
            le = dict(labels).get("le")
            groups[frozenset(l for l in labels if l[0] != "le")].append((float(le), v))
        out = {}
        for labels, buckets in groups.items():
            buckets.sort()
            total = buckets[-1][1] if buckets else 0
            if total <= 0:
                continue
            rank, prev_le, prev_v = q * total, 0.0, 0.0
            for le, v in buckets:
                if v >= rank:
                    out[labels] = le if math.isinf(le) else prev_le + (le - prev_le) * (rank - prev_v) / max(v - prev_v, 1e-12)
                    break
                prev_le, prev_v = le, v
        return out
    m = re.fullmatch(r'(sum|min|max)(?:\s+by\s+\(([^)]*)\))?\s*\((.*)\)', expr)
    if m:
        fn, by, inner = m.group(1), [b.strip() for b in (m.group(2) or "").split(",") if b.strip()], m.group(3)
        groups = defaultdict(list)
        for labels, v in evaluate(inner, scrapes, i).items():
            groups[frozenset(l for l in labels if l[0] in by)].append(v)
        agg = {"sum": sum, "min": min, "max": max}[fn]
        return {labels: agg(vs) for labels, vs in groups.items()}
    m = re.fullmatch(r'(rate|increase)\((.*)\[([^\]]+)\]\)', expr)
    if m:
        fn, selector, window = m.group(1), m.group(2), seconds(m.group(3))
        t, now = scrapes[i][0], select(m.group(2), scrapes[i][1])
        j = i
        while j > 0 and scrapes[j - 1][0] >= t - window:
            j -= 1
        j = max(0, j - 1) if j == i else j
        then, span = select(selector, scrapes[j][1]), max(t - scrapes[j][0], 1)
        out = {}
        for labels, v in now.items():
            delta = max(v - then.get(labels, 0.0), 0.0)
            out[labels] = delta / span if fn == "rate" else delta * window / span
        return out
    return select(expr, scrapes[i][1])


def legend(fmt, labels):
    d = dict(labels)
    return re.sub(r"\{\{(\w+)\}\}", lambda m: d.get(m.group(1), ""), fmt) or "value"


def main(directory, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.load(open(DASHBOARD))
    scrapes = load(directory)
    if len(scrapes) < 2:
        sys.exit(f"need two scrapes or more in {directory}")
    t0 = scrapes[0][0]
    panels = dashboard["panels"]
    rows = math.ceil(len(panels) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(16, 3.2 * rows))
    for ax, panel in zip(axes.flat, panels):
        lines = defaultdict(lambda: ([], []))
        for target in panel["targets"]:
            for i, (t, _) in enumerate(scrapes):
                for labels, v in evaluate(target["expr"], scrapes, i).items():
                    xs, ys = lines[legend(target["legendFormat"], labels)]
                    xs.append((t - t0) / 60)
                    ys.append(v)
        shown = sorted(lines.items(), key=lambda kv: -max(kv[1][1], default=0))[:8]
        for name, (xs, ys) in shown:
            ax.plot(xs, ys, label=name, linewidth=1.2)
        ax.set_title(panel["title"] + (f" ({panel['fieldConfig']['defaults']['unit']})" if panel["fieldConfig"]["defaults"].get("unit") not in (None, "short") else ""), fontsize=10)
        ax.set_xlabel("minutes", fontsize=8)
        ax.tick_params(labelsize=7)
        if shown:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(dashboard["title"], fontsize=13)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"{out}: {len(panels)} panels over {len(scrapes)} scrapes ({(scrapes[-1][0] - t0) / 60:.0f} minutes)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
