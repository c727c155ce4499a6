"""Manifold Muon solvers in training: loss curves of ``modman sweep`` folders run with different ``--solver``.

Each folder holds runs named ``EXP--lr-…--seed-S`` (``modman sweep --solver NAME --out FOLDER``). For every
experiment the figure shows, per solver, the validation loss against step and against training seconds (mean
over seeds, the band is min…max), and the table gives final validation loss (mean ± sd over seeds, and the
seeds' spread), tokens/s and wall time.

    python -m benchmarks.solver_curves FOLDER=LABEL [FOLDER=LABEL ...] [--out docs/results/solvers]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from modman.experiments.common.files import write_json_atomic


def load(folder: Path) -> dict[str, list[dict]]:
    """``{experiment: [run, ...]}`` of the finished runs in ``folder`` (run: summary and val curve)."""
    out: dict[str, list[dict]] = {}
    for summary_path in sorted(folder.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        if summary.get("status") != "finished":
            continue
        rows = [json.loads(line) for line in (summary_path.parent / "metrics.jsonl").read_text().splitlines()]
        curve = [(r["step"], r["val_loss"], r.get("train_seconds", 0.0)) for r in rows if "val_loss" in r]
        out.setdefault(summary["experiment"], []).append({"summary": summary, "curve": curve})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("folders", nargs="+", metavar="FOLDER=LABEL")
    p.add_argument("--out", default="docs/results/solvers")
    args = p.parse_args(argv)
    runs = {}
    for item in args.folders:
        folder, _, label = item.partition("=")
        runs[label or folder] = load(Path(folder))
    experiments = sorted({e for by_exp in runs.values() for e in by_exp})
    table = []
    for exp in experiments:
        for label, by_exp in runs.items():
            finals = [r["summary"]["final_val_loss"] for r in by_exp.get(exp, [])]
            if not finals:
                continue
            table.append(
                {
                    "experiment": exp,
                    "solver": label,
                    "seeds": len(finals),
                    "val_mean": statistics.mean(finals),
                    "val_sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                    "val_spread": max(finals) - min(finals),
                    "tokens_per_sec": statistics.mean(r["summary"]["tokens_per_sec"] for r in by_exp[exp]),
                    "wall_s": statistics.mean(r["summary"]["wall_seconds"] for r in by_exp[exp]),
                }
            )
    print(
        f"{'experiment':<15}{'solver':<12}{'seeds':>6}{'val mean':>10}{'sd':>8}{'spread':>8}{'tok/s':>8}{'wall s':>8}"
    )
    for r in table:
        print(
            f"{r['experiment']:<15}{r['solver']:<12}{r['seeds']:>6}{r['val_mean']:>10.4f}{r['val_sd']:>8.4f}"
            f"{r['val_spread']:>8.4f}{r['tokens_per_sec']:>8.0f}{r['wall_s']:>8.0f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "solvers.json", {"runs": {k: str(v) for k, v in zip(runs, args.folders)}, "table": table})
    plot(runs, experiments, out / "solvers.png")
    print(f"wrote {out / 'solvers.json'} and {out / 'solvers.png'}")


def plot(runs, experiments, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(experiments), 2, figsize=(10, 3.6 * len(experiments)), squeeze=False)
    for row, exp in zip(axes, experiments):
        for label, by_exp in runs.items():
            curves = [r["curve"] for r in by_exp.get(exp, [])]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            steps = [curves[0][i][0] for i in range(n)]
            losses = [[c[i][1] for c in curves] for i in range(n)]
            seconds = [statistics.mean(c[i][2] for c in curves) for i in range(n)]
            mean = [statistics.mean(v) for v in losses]
            for ax, x in ((row[0], steps), (row[1], seconds)):
                (line,) = ax.plot(x, mean, label=f"{label} ({len(curves)} seeds)")
                ax.fill_between(
                    x, [min(v) for v in losses], [max(v) for v in losses], alpha=0.2, color=line.get_color()
                )
        row[0].set(title=f"{exp}: val loss by step", xlabel="step", ylabel="val loss")
        row[1].set(title=f"{exp}: val loss by training time", xlabel="training seconds")
        for ax in row:
            ax.legend()
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
