"""What a ``modman train`` run trains: the model (modman's decoder, a Hugging Face architecture, or the
modman.modular GPT), its optimizer and its lr schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...optim import ModularOptimizer
from ...optim.modular import MATRIX_ROLES
from .config import TrainConfig
from .model import PRESETS, Transformer
from .recipes import MANIFOLD_MUON_TOL, MODULAR_LR, modular_role, training_steps

__all__ = ["build_run", "build_modular", "lr_factor"]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_run(
    cfg: TrainConfig, device: torch.device, shard: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m
):
    """Model, optimizer and schedule; ``shard`` (FSDP2) acts on the model before the optimizer sees its weights."""
    torch.manual_seed(cfg.seed)
    dtype = getattr(torch, cfg.dtype)
    if cfg.exp == "modular":
        model, opt = build_modular(cfg, device, dtype)
    else:
        net: torch.nn.Module
        if cfg.model == "modman":
            net = Transformer(PRESETS[cfg.preset])
        else:
            from ...integrations.hf_models import build_hf_model

            net = build_hf_model(cfg.model, PRESETS[cfg.preset])
        model = shard(net.to(device=device, dtype=dtype))
        opt = ModularOptimizer(
            model,
            cfg.exp,
            cfg.lr,
            adamw_lr=cfg.adamw_lr,
            role_lr=cfg.role_lr,
            solver=cfg.solver,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
        )
    for g in opt.param_groups:  # before the scheduler records the initial lrs
        g["lr"] *= cfg.lr_scale * (cfg.matrix_lr_scale if g.get("role") in MATRIX_ROLES else 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    return model, opt, sched


def build_modular(cfg: TrainConfig, device: torch.device, dtype: torch.dtype = torch.float32):
    """The preset's shape as a modman.modular GPT (no norms, convex residuals) and ModularDescent; weight decay
    does not apply (every weight is on a manifold)."""
    from ...modular import GPT, ModularDescent

    p = PRESETS[cfg.preset]
    model = GPT(
        p.vocab_size,
        p.dim,
        p.n_heads,
        p.n_layers,
        ffn_mult=max(1, p.ffn_hidden // p.dim),
        tol=MANIFOLD_MUON_TOL,
        steps=training_steps(cfg.solver),
    ).to(device=device, dtype=dtype)
    for atom, _ in model.budgets():
        atom.role = modular_role(atom.label)
        if hasattr(atom, "solver"):  # Linear atoms: the --solver of their manifold Muon solves
            setattr(atom, "solver", cfg.solver)  # noqa: B010 - an attribute of Linear atoms only
    return model, ModularDescent(model, lr=cfg.lr if cfg.lr is not None else MODULAR_LR, momentum=cfg.momentum)
