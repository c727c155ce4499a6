"""``modman lr-transfer``: does the best learning rate stay put when the MLP gets wider?

The MLP ``in → w (→ w ...) → 10`` (``depth`` hidden layers, no bias, ReLU) is trained at widths ``w`` over an
lr grid twice: as a
modman.modular ``MLP`` with ``ModularDescent`` (updates of unit modular norm, scaled by the budgets, then
retracted onto Stiefel; logits scaled by ``output_scale``) and as a torch MLP with AdamW. Data: CIFAR-10 images
average-pooled by ``pool``
(32×32 → 8×8 by default, 192 inputs) and scaled to RMS 1 per image. Each run
writes ``OUT/METHOD-wWIDTH-lrLR.json`` (finished runs are skipped); ``transfer.png`` plots the final train
loss against lr per width and ``transfer.json`` holds the best lr per width and its shift in grid steps.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from ...modular import MLP, ModularDescent
from ..common.config import require_positive_ints
from ..common.environment import resolve_device
from ..common.files import write_json_atomic
from .cifar import accuracy, load_cifar10

__all__ = [
    "TransferConfig",
    "prepare_inputs",
    "train_one",
    "run_transfer",
    "best_lrs",
    "plot_transfer",
    "format_transfer",
    "METHODS",
]

METHODS = ("modular", "adamw")


@dataclass
class TransferConfig:
    """Settings of the lr-transfer experiment (``modman lr-transfer`` flags)."""

    HELP: ClassVar[dict[str, str]] = {
        "data_dir": "folder holding cifar-10-batches-py/ (or where to download it)",
        "out": "folder of the runs, transfer.json and transfer.png",
        "widths": "hidden widths of the MLPs to train",
        "modular_lrs": "lr grid of ModularDescent (one lr for the whole network, split by the modular norm)",
        "adamw_lrs": "lr grid of AdamW, the baseline whose best lr drifts with width",
        "steps": "optimizer steps per run",
        "batch_size": "images per optimizer step",
        "pool": "average-pool the 32x32 images by this factor first (a divisor of 32)",
        "depth": "hidden layers of the MLP",
        "output_scale": "factor on the network's output (the modular MLP's logit scale)",
        "momentum": "momentum of ModularDescent, in [0, 1)",
        "seed": "seed of the initial weights and of the batch order",
        "device": "auto (CUDA when present, else CPU), cpu, cuda or cuda:N",
        "download": "download CIFAR-10 (170 MB) into --data-dir when it is not there",
    }

    data_dir: str = "data"
    out: str = "runs/lr_transfer"
    widths: list[int] = field(default_factory=lambda: [64, 256, 1024])
    modular_lrs: list[float] = field(default_factory=lambda: [0.03125 * 2**k for k in range(8)])
    adamw_lrs: list[float] = field(default_factory=lambda: [2.5e-4 * 2**k for k in range(8)])
    steps: int = 300
    batch_size: int = 256
    pool: int = 4
    depth: int = 1
    output_scale: float = 8.0
    momentum: float = 0.9
    seed: int = 0
    device: str = "auto"
    download: bool = True

    def __post_init__(self):
        require_positive_ints(self, ("steps", "batch_size", "pool", "depth"))
        if 32 % self.pool:
            raise UserError(f"--pool must divide 32 (1, 2, 4, 8, 16, 32); got {self.pool}")
        for name in ("widths", "modular_lrs", "adamw_lrs"):
            values = getattr(self, name)
            if not values or not all(v > 0 for v in values):
                raise UserError(f"--{name.replace('_', '-')} must be a non-empty list of numbers > 0; got {values!r}")
        if not all(isinstance(w, int) for w in self.widths):
            raise UserError(f"--widths must be integers; got {self.widths!r}")


def prepare_inputs(data: dict, pool: int) -> dict:
    """Average-pool each image by ``pool``, flatten, and scale every image vector to RMS 1."""
    out = {}
    for split, (x, y) in data.items():
        x = F.avg_pool2d(x, pool).flatten(1)
        out[split] = (x / x.square().mean(1, keepdim=True).sqrt().clamp_min(1e-12), y)
    return out


def _model(method: str, widths: tuple[int, ...], cfg: TransferConfig, lr: float):
    torch.manual_seed(cfg.seed)
    if method == "modular":  # logits of RMS <= 1 would cap the loss, so they are scaled (as in modular.GPT)
        net = MLP(widths, output_scale=cfg.output_scale, seed=cfg.seed)
        return net, ModularDescent(net, lr=lr, momentum=cfg.momentum, tangent=False)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += ([nn.ReLU()] if i else []) + [nn.Linear(a, b, bias=False)]
    seq = nn.Sequential(*layers)
    return seq, torch.optim.AdamW(seq.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)


def train_one(method: str, width: int, lr: float, data: dict, cfg: TransferConfig) -> dict:
    """One run: ``steps`` minibatch steps, linear lr decay to 0; the loss is the mean of the last 10% of steps."""
    device = resolve_device(cfg.device)
    x_train, y_train = data["train"]
    widths = (x_train.shape[1], *[width] * cfg.depth, 10)
    net, opt = _model(method, widths, cfg, lr)
    net.to(device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses, start = [], time.perf_counter()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(y_train), (cfg.batch_size,), generator=gen)
        loss = F.cross_entropy(net(x_train[idx].to(device)), y_train[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    tail = losses[-max(1, cfg.steps // 10) :]
    final = sum(tail) / len(tail)
    return {
        "method": method,
        "width": width,
        "lr": lr,
        "final_train_loss": final if math.isfinite(final) else None,
        "test_acc": accuracy(net, data["test"][0], data["test"][1], device, 1024),
        "seconds": time.perf_counter() - start,
        "losses": losses[:: max(1, cfg.steps // 50)],
        "config": asdict(cfg),
    }


def _name(method: str, width: int, lr: float) -> str:
    return f"{method}-w{width}-lr{lr:g}.json"


def run_transfer(cfg: TransferConfig, data: dict | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Every (method, width, lr) of the grid; a run whose JSON exists is read back, not repeated."""
    resolve_device(cfg.device)
    grid = [
        (m, w, lr) for m in METHODS for w in cfg.widths for lr in (cfg.modular_lrs if m == "modular" else cfg.adamw_lrs)
    ]
    if data is None and not all((Path(cfg.out) / _name(*g)).is_file() for g in grid):
        data = prepare_inputs(load_cifar10(cfg.data_dir, download=cfg.download), cfg.pool)
    results = []
    for i, (method, width, lr) in enumerate(grid, 1):
        path = Path(cfg.out) / _name(method, width, lr)
        if path.is_file():
            results.append(json.loads(path.read_text()))
            continue
        assert data is not None  # loaded above: this run's file is missing
        result = train_one(method, width, lr, data, cfg)
        write_json_atomic(path, result)
        loss = result["final_train_loss"]
        log(
            f"[{i}/{len(grid)}] {method} width {width} lr {lr:g}: train loss "
            f"{'diverged' if loss is None else f'{loss:.4f}'}, test {result['test_acc']:.2f} %, "
            f"{result['seconds']:.1f} s"
        )
        results.append(result)
    return results


def best_lrs(results: list[dict]) -> dict[str, dict]:
    """Per method: the best lr per width (lowest final train loss) and how many grid steps it moves."""
    out = {}
    for method in METHODS:
        rows = [r for r in results if r["method"] == method]
        grid = sorted({r["lr"] for r in rows})
        best = {}
        for width in sorted({r["width"] for r in rows}):
            ok = [r for r in rows if r["width"] == width and r["final_train_loss"] is not None]
            if ok:
                best[width] = min(ok, key=lambda r: r["final_train_loss"])
        idx = [grid.index(b["lr"]) for b in best.values()]
        out[method] = {
            "best_lr": {w: b["lr"] for w, b in best.items()},
            "best_loss": {w: b["final_train_loss"] for w, b in best.items()},
            "test_acc": {w: b["test_acc"] for w, b in best.items()},
            "shift_in_grid_steps": (max(idx) - min(idx)) if idx else None,
        }
    return out


def format_transfer(summary: dict) -> str:
    lines = [f"{'method':<9}{'width':>7}{'best lr':>10}{'train loss':>12}{'test %':>8}", "-" * 46]
    for method, s in summary.items():
        for w, lr in s["best_lr"].items():
            lines.append(f"{method:<9}{w:>7}{lr:>10.4g}{s['best_loss'][w]:>12.4f}{s['test_acc'][w]:>8.2f}")
        lines.append(f"{method}: the best lr moves by {s['shift_in_grid_steps']} grid step(s) across widths")
    return "\n".join(lines)


def plot_transfer(results: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METHODS), figsize=(6 * len(METHODS), 4.3))
    for ax, method in zip(axes, METHODS):
        widths = sorted({r["width"] for r in results if r["method"] == method})
        for j, w in enumerate(widths):
            pts = sorted(
                (r["lr"], r["final_train_loss"])
                for r in results
                if r["method"] == method and r["width"] == w and r["final_train_loss"] is not None
            )
            color = plt.cm.viridis(j / max(1, len(widths) - 1))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"width {w}")
            if pts:
                best = min(pts, key=lambda p: p[1])
                ax.plot(*best, "*", color=color, markersize=14)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final train loss")
        ax.set_title({"modular": "modman.modular MLP + ModularDescent", "adamw": "torch MLP + AdamW"}[method])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
