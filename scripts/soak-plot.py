#!/usr/bin/env python3
"""Plots the series of `sandpit-bench --soak` (soak.csv) into a small PNG.

Usage: soak-plot.py soak.csv soak.png   (needs matplotlib: python3-matplotlib, installed by
scripts/lib.sh's install_debian_packages)
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OPS = ["create", "exec", "write", "read", "process", "sleep", "wake", "destroy"]


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    t = [float(r["t_s"]) / 60 for r in rows]

    def col(name, scale=1.0):
        return [float(r[name]) / scale if r[name] not in ("", None) else float("nan") for r in rows]

    panels = [
        ("host SUnreclaim (MiB)", [("SUnreclaim", col("sunreclaim_kib", 1024))]),
        ("kernel memory cgroups", [("memcgs", col("memcgs"))]),
        ("server RSS (MiB)", [("RSS", col("server_rss_kib", 1024))]),
        ("server fds", [("fds", col("server_fds"))]),
        ("sandbox PSS (MiB)", [("PSS", col("sandbox_pss_kib", 1024))]),
        ("data dir disk (MiB)", [("disk", col("data_disk_kib", 1024))]),
        ("loop devices / errors", [("loops", col("loops")), ("errors", col("errors"))]),
        ("p50 per op (ms)", [(op, col(f"{op}_p50_ms")) for op in OPS]),
        ("p99 per op (ms)", [(op, col(f"{op}_p99_ms")) for op in OPS]),
    ]
    fig, axes = plt.subplots(3, 3, figsize=(12, 8), dpi=70)
    for ax, (title, series) in zip(axes.flat, panels):
        for label, ys in series:
            ax.plot(t, ys, marker=".", linewidth=1, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("minutes", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        if len(series) > 1:
            ax.legend(fontsize=6, ncol=2)
    fig.suptitle("sandpit-bench --soak (last point: after every sandbox was destroyed)", fontsize=11)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main()
