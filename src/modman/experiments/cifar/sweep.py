"""``modman cifar --sweep``: every rule over a learning-rate grid and several seeds, and the blog's figure.

Finished runs (their JSON exists in OUT) are skipped, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from ..common.files import write_json_atomic
from .cifar import UPDATES, CifarConfig, load_cifar10, result_name, run_cifar

__all__ = ["DEFAULT_LRS", "run_sweep", "best_by_rule", "plot_sweep", "format_best"]

# lr grids per rule, a factor ~3 apart, bracketing each rule's good values on this MLP.
DEFAULT_LRS = {
    "manifold_muon": [0.01, 0.03, 0.1, 0.3, 1.0],
    "hyperspherical_descent": [0.01, 0.03, 0.1, 0.3, 1.0],
    "adam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
}


def run_sweep(base: CifarConfig, seeds: list[int], lrs: dict[str, list[float]], log=print) -> list[dict]:
    """Run (or read back) every (rule, lr, seed); returns every result."""
    data, results = None, []
    for update in UPDATES:
        for lr in lrs[update]:
            for seed in seeds:
                cfg = dataclasses.replace(base, update=update, lr=lr, seed=seed)
                path = Path(cfg.out) / result_name(cfg)
                if path.is_file():
                    results.append(json.loads(path.read_text()))
                    continue
                data = data if data is not None else load_cifar10(base.data_dir, download=base.download)
                res = run_cifar(cfg, data=data)
                write_json_atomic(path, res)
                log(f"{update} lr {lr} seed {seed}: test {res['test_acc']:.2f} %, train {res['train_acc']:.2f} %")
                results.append(res)
    return results


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def best_by_rule(results: list[dict]) -> dict[str, dict]:
    """Per rule, the lr with the best mean test accuracy over seeds, with mean ± sd and cost per epoch."""
    best = {}
    for update in UPDATES:
        by_lr: dict[float, list[dict]] = {}
        for r in results:
            if r["update"] == update:
                by_lr.setdefault(r["lr"], []).append(r)
        if not by_lr:
            continue
        lr, runs = max(by_lr.items(), key=lambda kv: statistics.fmean(r["test_acc"] for r in kv[1]))
        test, test_sd = _mean_sd([r["test_acc"] for r in runs])
        train, train_sd = _mean_sd([r["train_acc"] for r in runs])
        epoch_s = statistics.fmean(t for r in runs for t in r["epoch_times"])
        best[update] = {
            "lr": lr,
            "seeds": len(runs),
            "test_acc": test,
            "test_sd": test_sd,
            "train_acc": train,
            "train_sd": train_sd,
            "seconds_per_epoch": epoch_s,
            "singular_values": runs[0]["singular_values"],
        }
    return best


def format_best(best: dict[str, dict]) -> str:
    head = f"{'rule':<24}{'best lr':>9}{'seeds':>6}{'test %':>16}{'train %':>16}{'s/epoch':>9}"
    lines = [head, "-" * len(head)]
    for update, b in best.items():
        lines.append(
            f"{update:<24}{b['lr']:>9g}{b['seeds']:>6}{b['test_acc']:>10.2f} ± {b['test_sd']:<4.2f}"
            f"{b['train_acc']:>10.2f} ± {b['train_sd']:<4.2f}{b['seconds_per_epoch']:>9.2f}"
        )
    return "\n".join(lines)


def plot_sweep(results: list[dict], path: str | Path) -> None:
    """Test and train accuracy against lr per rule (mean ± sd over seeds); singular values per layer of each best
    run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = best_by_rule(results)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, title in ((axes[0], "test_acc", "test accuracy"), (axes[1], "train_acc", "train accuracy")):
        for update in best:
            lrs = sorted({r["lr"] for r in results if r["update"] == update})
            stats = [_mean_sd([r[key] for r in results if r["update"] == update and r["lr"] == lr]) for lr in lrs]
            ax.errorbar(lrs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=update)
        ax.set(xscale="log", xlabel="learning rate", ylabel="%", title=title)
        ax.legend()
    for update, b in best.items():
        for layer, sv in enumerate(b["singular_values"]):
            axes[2].plot(sorted(sv, reverse=True), label=f"{update} fc{layer + 1}", alpha=0.8)
    axes[2].set(yscale="log", xlabel="index", ylabel="singular value", title="singular values at the end (best lr)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
