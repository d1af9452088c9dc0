"""Data analysis in a sandbox: upload a CSV, analyse it with pandas in the code interpreter,
draw a chart with matplotlib there, and save the chart on this machine.

    SANDPIT_URL=http://127.0.0.1:7070 SANDPIT_KEY=sp_... python analysis.py [chart.png]

Nothing runs locally but this script: the data, pandas and matplotlib live in the sandbox
(pandas and matplotlib are in sandpit's default image). CI runs this file against a real
server (crates/cli/tests/suite/sdk_python.rs).
"""

from __future__ import annotations

import csv
import io
import math
import sys

from sandpit import Sandpit


def sales_csv() -> bytes:
    """A year of made-up daily sales for three shops."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", "shop", "sales"])
    for day in range(365):
        for index, shop in enumerate(["north", "south", "harbour"]):
            season = 1 + 0.3 * math.sin(2 * math.pi * (day + 40 * index) / 365)
            writer.writerow([day, shop, round(100 * season + (day * 7919 + index) % 23, 2)])
    return out.getvalue().encode()


ANALYSIS = """
import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv("sales.csv")
df["month"] = df["day"] // 31 + 1
monthly = df.pivot_table(index="month", columns="shop", values="sales", aggfunc="sum")
summary = df.groupby("shop")["sales"].agg(["mean", "min", "max"]).round(1)
print(summary.to_string())

ax = monthly.plot(marker="o", figsize=(8, 4), title="Monthly sales by shop")
ax.set_ylabel("sales")
plt.tight_layout()
plt.show()
summary.to_dict()
"""


def main(chart_path: str) -> None:
    with Sandpit() as client, client.sandbox(ephemeral=True) as sandbox:
        sandbox.upload("sales.csv", sales_csv())
        run = sandbox.run_code(ANALYSIS)
        if run.error is not None:
            raise SystemExit(f"the analysis failed: {run.error.name}: {run.error.message}")
        print("".join(run.stdout))
        chart = next(result for result in run.results if result.png is not None)
        chart.save_png(chart_path)
        print(f"chart saved to {chart_path} ({len(chart.png or b'')} bytes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sales.png")
