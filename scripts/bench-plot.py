#!/usr/bin/env python3
"""Draws the latency CDF of each scenario from a bench run's results.json (scripts/bench).

    scripts/bench-plot.py bench-results/<run>

Writes cdf-connections.png (connect latency), cdf-fanout.png and cdf-unicast.png
(publish-to-receive latency) next to results.json.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {
    "herald-standalone": "Herald standalone",
    "herald-cluster": "Herald cluster (3 nodes)",
    "herald-cross-node": "Herald cross-node (Kafka)",
    "nchan": "Nchan",
}
COLORS = {"herald-standalone": "tab:blue", "herald-cluster": "tab:green", "herald-cross-node": "tab:purple", "nchan": "tab:orange"}
ORDER = list(LABELS)
TOP = 0.9999  # the logit axis cannot show 1.0


def curve(points):
    xs = [max(p[0], 0.001) for p in points]
    ys = [min(max(p[1], 0.0001), TOP) for p in points]
    return xs, ys


def axes_style(ax, title, xlabel):
    ax.set_xscale("log")
    ax.set_yscale("logit")
    ax.set_ylim(0.01, TOP)
    ax.set_yticks([0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999])
    ax.set_yticklabels(["1%", "10%", "50%", "90%", "99%", "99.9%", "99.99%"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction at or below")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def runs_of(results, scenario):
    runs = [r for r in results["runs"] if r["scenario"] == scenario]
    return sorted(runs, key=lambda r: ORDER.index(r["target"]) if r["target"] in ORDER else 99)


def plot_connections(results, out):
    fig, ax = plt.subplots(figsize=(8, 5))
    for run in runs_of(results, "connections"):
        c = run.get("connections")
        if c and c["cdf"]:
            xs, ys = curve(c["cdf"])
            ax.plot(xs, ys, label=f'{LABELS.get(run["target"], run["target"])} ({c["connected"]} clients)',
                    color=COLORS.get(run["target"]))
    axes_style(ax, "Connections: connect-to-established latency per client", "latency (ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_steps(results, scenario, out, title, unit, passed_key, limit_ms=None):
    """One panel per server, one curve per rate step; dotted: the step that ended the ramp."""
    runs = [r for r in runs_of(results, scenario) if r.get(scenario) and r[scenario]["steps"]]
    fig, axes = plt.subplots(1, max(1, len(runs)), figsize=(5.5 * max(1, len(runs)), 5), squeeze=False, sharex=True)
    for ax, run in zip(axes[0], runs):
        steps = run[scenario]["steps"]
        cmap = plt.get_cmap("viridis")
        for i, step in enumerate(steps):
            if not step["cdf"]:
                continue
            xs, ys = curve(step["cdf"])
            ok = step[passed_key]
            ax.plot(xs, ys, "-" if ok else ":", color=cmap(i / max(1, len(steps) - 1)),
                    label=f'{step["rate"]:g} {unit}' + ("" if ok else f' ({step["verdict"]})'))
        axes_style(ax, f'{title}: {LABELS.get(run["target"], run["target"])}', "publish-to-receive latency (ms)")
        if limit_ms:
            ax.axvline(limit_ms, color="red", alpha=0.4, linewidth=1, label=f"p99 limit {limit_ms:g} ms")
        ax.legend(fontsize=7)
    if not runs:
        axes_style(axes[0][0], f"{title}: no results", "publish-to-receive latency (ms)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    run_dir = sys.argv[1]
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    plot_connections(results, os.path.join(run_dir, "cdf-connections.png"))
    plot_steps(results, "fanout", os.path.join(run_dir, "cdf-fanout.png"), "Fan-out", "msg/s to the group", "keptUp")
    plot_steps(results, "unicast", os.path.join(run_dir, "cdf-unicast.png"), "Unicast", "msg/s", "passed", limit_ms=50)


if __name__ == "__main__":
    main()
