"""Collect the constrained-Muon lr grid (``modman sweep`` runs) into grid.json and grid.png.

python docs/results/constrained/collect.py RUNS_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent


def main(root: str) -> None:
    runs = []
    for summary in sorted(Path(root).glob("*/summary.json")):
        s = json.loads(summary.read_text())
        runs.append(
            {
                "experiment": s["experiment"],
                "lr": s["config"]["lr"],
                "status": s["status"],
                "final_val_loss": s.get("final_val_loss"),
                "final_train_loss": s.get("final_train_loss"),
                "tokens_per_sec": s.get("tokens_per_sec"),
                "versions": s.get("versions"),
            }
        )
    (HERE / "grid.json").write_text(json.dumps(runs, indent=1) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    for exp in sorted({r["experiment"] for r in runs}):
        pts = sorted((r["lr"] or 0.0, r["final_val_loss"]) for r in runs if r["experiment"] == exp)
        if exp == "muon_all":
            ax.axhline(pts[0][1], color="gray", ls="--", label=f"muon_all (lr {pts[0][0] or 0.02:g})")
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=exp)
    ax.set_xscale("log")
    ax.set_xlabel("lr of the attention and FFN matrices")
    ax.set_ylabel("final val loss (400 steps, small preset)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "grid.png", dpi=120)
    for r in runs:
        print(f"{r['experiment']:16s} {r['lr']!s:8s} {r['status']:9s} {r['final_val_loss']}")


if __name__ == "__main__":
    main(sys.argv[1])
