"""``modman roles``: which rule an experiment gives each parameter of a model (or each atom of the modular GPT)."""

from __future__ import annotations

import torch

from ...errors import UserError
from ...optim import ModularOptimizer, classify_parameters, roles_table
from ...optim.modular import unreached_roles
from .model import PRESETS, Transformer

__all__ = ["roles_report"]


def roles_report(exp: str = "baseline", preset: str = "small", model: str = "modman") -> str:
    """The table ``modman roles`` prints: parameter, shape, role and rule (``exp="modular"``: atom, role, shape
    and modular-norm budget), then a warning line per role the experiment names but reaches no matrix of."""
    if preset not in PRESETS:
        raise UserError(f"--preset: unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if exp == "modular":
        from .build import build_modular
        from .config import TrainConfig

        net, opt = build_modular(TrainConfig(exp="modular", preset=preset), torch.device("cpu"))
        lines = [f"{'atom':<24}{'role':<11}{'shape':<10}{'budget 1/c':>11}"]
        for (atom, _), g in zip(net.budgets(), opt.param_groups):
            shape = "x".join(map(str, atom.weight.shape))
            lines.append(
                f"{getattr(atom, 'label', type(atom).__name__):<24}{g['role']:<11}{shape:<10}{g['budget']:>11.4f}"
            )
        return "\n".join(lines + [f"mass {net.mass:g}, sensitivity {net.sensitivity:g}"])
    if model == "modman":
        net = Transformer(PRESETS[preset])
    else:
        from ...integrations.hf_models import build_hf_model

        net = build_hf_model(model, PRESETS[preset])
    table = roles_table(net, ModularOptimizer(net, exp).assignment)
    shapes = {n: p.shape for n, p in net.named_parameters()}
    return "\n".join([table] + [f"warning: {line}" for line in unreached_roles(classify_parameters(net), exp, shapes)])
