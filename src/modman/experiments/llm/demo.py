"""``modman demo``: train one small byte-level MLP language model with each optimizer and compare.

The model reads ``context`` bytes of the embedded Shakespeare corpus and predicts the next byte:
embedding (AdamW) → fc1, fc2 (the optimizer under test) → head (AdamW). Every optimizer sees the same
initial weights and the same batches, so the table compares the update rules alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from ...manifolds import SpectralBall, Stiefel
from ...optim import HypersphericalDescent, ManifoldMuon, Muon, SpectralDescent, StiefelRetraction
from ..common.data import load_text_bytes, split_tokens

__all__ = ["DemoConfig", "ByteMLP", "RECIPES", "run_demo", "format_table"]


class ByteMLP(nn.Module):
    """Next-byte predictor: ``head(relu(fc2(relu(fc1(concat(embed(x)))))))``."""

    def __init__(self, context: int = 8, embed_dim: int = 16, hidden: int = 128):
        super().__init__()
        self.embed = nn.Embedding(256, embed_dim)
        self.fc1 = nn.Linear(context * embed_dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Linear(hidden, 256, bias=False)

    def hidden_matrices(self) -> list[torch.Tensor]:
        return [self.fc1.weight, self.fc2.weight]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).flatten(1)  # (B, context·embed_dim)
        h = F.relu(self.fc1(h))  # (B, hidden)
        h = F.relu(self.fc2(h))  # (B, hidden)
        return self.head(h)  # (B, 256)


def _adamw(params, lr=3e-3):
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def _sphere_radius(p: torch.Tensor) -> float:
    """Frobenius norm of an orthonormal matrix of p's shape: the demo keeps weights at that scale."""
    return float(min(p.shape)) ** 0.5


# name -> builder(hidden matrices) -> optimizer for them; the other parameters always get AdamW (lr 3e-3).
# Learning rates: the best of a small grid per optimizer at the default settings (200 steps, hidden 128).
RECIPES = {
    "adamw": lambda ps: _adamw(ps, lr=1e-2),
    "muon": lambda ps: Muon(ps, lr=0.02),
    "spectral": lambda ps: SpectralDescent(ps, lr=0.01, radius=1.0),
    "hyperspherical": lambda ps: HypersphericalDescent(
        [{"params": [p], "radius": _sphere_radius(p)} for p in ps], lr=0.1, momentum=0.9
    ),
    "manifold_muon": lambda ps: ManifoldMuon(ps, lr=0.1),
    "stiefel_adamw": lambda ps: StiefelRetraction(_adamw(ps, lr=1e-2)),
}


@dataclass
class DemoConfig:
    """Settings of ``modman demo`` (the CLI flags map onto these one to one)."""

    HELP: ClassVar[dict[str, str]] = {
        "steps": "optimizer steps per optimizer",
        "batch_size": "next-byte examples per step",
        "context": "bytes the MLP sees before the one it predicts",
        "embed_dim": "width of each byte's embedding",
        "hidden": "width of the two hidden layers (the matrices the optimizers under test update)",
        "seed": "seed of the shared initial weights and of the batch order",
        "device": "cpu, cuda or cuda:N",
        "data": "a UTF-8 text file to train on. default: the embedded Shakespeare corpus",
        "eval_batches": "batches in the validation-loss estimate",
        "optimizers": "optimizers of the hidden matrices to compare (embedding and head: AdamW)",
    }

    steps: int = 200
    batch_size: int = 128
    context: int = 8
    embed_dim: int = 16
    hidden: int = 128
    seed: int = 0
    device: str = "cpu"
    data: str | None = None
    eval_batches: int = 16
    optimizers: list[str] = field(default_factory=lambda: list(RECIPES))

    def __post_init__(self):
        unknown = [o for o in self.optimizers if o not in RECIPES]
        if unknown:
            raise UserError(f"demo: unknown optimizer(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
        for name in ("steps", "batch_size", "context", "embed_dim", "hidden", "eval_batches"):
            if getattr(self, name) < 1:
                raise UserError(f"demo: {name} must be >= 1; got {getattr(self, name)}")


def _batch(tokens: torch.Tensor, cfg: DemoConfig, gen: torch.Generator):
    starts = torch.randint(0, len(tokens) - cfg.context - 1, (cfg.batch_size,), generator=gen)
    window = starts[:, None] + torch.arange(cfg.context + 1)
    seq = tokens[window]
    return seq[:, :-1].to(cfg.device), seq[:, -1].to(cfg.device)


def _train_one(name: str, init: dict, train: torch.Tensor, val_batches, cfg: DemoConfig) -> dict:
    model = ByteMLP(cfg.context, cfg.embed_dim, cfg.hidden).to(cfg.device)
    model.load_state_dict(init)
    hidden = model.hidden_matrices()
    others = [p for p in model.parameters() if all(p is not h for h in hidden)]
    optimizers = [RECIPES[name](hidden), _adamw(others)]
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses, msign_calls, seconds = [], 0, 0.0
    for _ in range(cfg.steps):
        x, y = _batch(train, cfg, gen)
        loss = F.cross_entropy(model(x), y)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for opt in optimizers:
            opt.step()
        if cfg.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        losses.append(loss.item())
        diag: dict[str, dict[str, Any]] = getattr(optimizers[0], "diagnostics", dict)()
        msign_calls += sum(d.get("msign_calls", 0) for d in diag.values())
    with torch.no_grad():
        val = sum(F.cross_entropy(model(x), y).item() for x, y in val_batches) / len(val_batches)
        sv = torch.cat([torch.linalg.svdvals(h.double()) for h in hidden])
    tail = losses[-max(1, cfg.steps // 10) :]
    return {
        "optimizer": name,
        "train_loss": sum(tail) / len(tail),
        "val_loss": val,
        "ms_per_step": 1000 * seconds / cfg.steps,
        "msign_per_step": msign_calls / cfg.steps,
        "sigma_min": float(sv.min()),
        "sigma_max": float(sv.max()),
        "stiefel_violation": max(Stiefel().violation(h) for h in hidden),
        "spectral_violation": max(SpectralBall().violation(h) for h in hidden),
    }


def run_demo(cfg: DemoConfig, progress=None) -> list[dict]:
    """Train the same initial model once per optimizer; returns one result dict per optimizer."""
    train, val = split_tokens(load_text_bytes(cfg.data))
    if len(val) <= cfg.context + 1 or len(train) <= cfg.context + 1:
        raise UserError(f"demo: the text is too short for context {cfg.context}; give a longer file")
    torch.manual_seed(cfg.seed)
    init = {k: v.clone() for k, v in ByteMLP(cfg.context, cfg.embed_dim, cfg.hidden).state_dict().items()}
    val_gen = torch.Generator().manual_seed(cfg.seed + 2)
    val_batches = [_batch(val, cfg, val_gen) for _ in range(cfg.eval_batches)]
    results = []
    for name in cfg.optimizers:
        results.append(_train_one(name, init, train, val_batches, cfg))
        if progress is not None:
            progress(results[-1])
    return results


def format_table(results: list[dict]) -> str:
    """A fixed-width comparison table of ``run_demo``'s results."""
    head = f"{'optimizer':<16}{'train':>8}{'val':>8}{'ms/step':>9}{'msign/step':>12}{'sigma min..max':>18}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['optimizer']:<16}{r['train_loss']:>8.3f}{r['val_loss']:>8.3f}{r['ms_per_step']:>9.1f}"
            f"{r['msign_per_step']:>12.1f}{r['sigma_min']:>9.3f}..{r['sigma_max']:<7.3f}"
        )
    return "\n".join(lines)
