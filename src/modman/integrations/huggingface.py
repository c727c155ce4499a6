"""modman in the Hugging Face ``Trainer``: any experiment's role-aware optimizer for a ``PreTrainedModel``, with
per-role spectra, gradient norms and solver diagnostics in the Trainer's own logs (TensorBoard, W&B, ...).

    from modman.integrations.huggingface import ModmanTrainer

    trainer = ModmanTrainer(model=model, args=args, train_dataset=data, experiment="manifold_muon")
    trainer.train()

``Trainer.create_optimizer`` is the hook ``ModmanTrainer`` overrides; with a plain ``Trainer`` pass
``optimizers=(create_optimizer(model, "muon_all", args), None)`` and ``ModmanCallback.install(trainer)`` for the
spectra in its logs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..optim import ModularOptimizer
from ..optim.modular import MATRIX_ROLES

try:
    from transformers import Trainer, TrainerCallback, TrainingArguments
except ImportError:  # pragma: no cover - exercised by the message test with transformers hidden
    raise ImportError(
        "modman.integrations.huggingface needs Hugging Face transformers: pip install 'modman[hf]' "
        "(or pip install transformers)"
    ) from None

__all__ = ["create_optimizer", "role_summary", "ModmanCallback", "ModmanTrainer"]


def create_optimizer(
    model: nn.Module, experiment: str = "muon_all", args: TrainingArguments | None = None, **kwargs: Any
) -> ModularOptimizer:
    """``ModularOptimizer(model, experiment)``: the experiment's rule on attention and FFN matrices at its default
    lr, AdamW elsewhere at ``args.learning_rate`` with ``args.weight_decay`` and ``args.adam_beta1/2``;
    ``kwargs`` (``lr``, ``role_lr``, ``solver``, ...) override. Records each role's gradient norm at every step
    (before the update) for ``role_summary``."""
    settings: dict[str, Any] = {}
    if args is not None:
        settings = dict(
            adamw_lr=args.learning_rate, weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2)
        )
    opt = ModularOptimizer(model, experiment, **{**settings, **kwargs})
    names = {id(p): n for n, p in model.named_parameters()}
    opt.last_grad_norms = {}  # type: ignore[attr-defined]  # read by role_summary

    @torch.no_grad()
    def record(optimizer, *_):
        squares: dict[str, torch.Tensor] = {}
        for g in optimizer.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    role = optimizer.roles[names[id(p)]]
                    squares[role] = squares.get(role, 0) + p.grad.float().square().sum()
        optimizer.last_grad_norms = {r: v.sqrt() for r, v in squares.items()}  # tensors: no host sync per step

    opt.register_step_pre_hook(record)
    return opt


@torch.no_grad()
def role_summary(model: nn.Module, opt: ModularOptimizer) -> dict[str, float]:
    """Per matrix role (attention, ffn): mean and max σ_max, worst condition number and mean Frobenius norm of its
    matrices (float64 SVD), the role's gradient norm at the last step; then the solver diagnostics over every
    matrix that reports them (mean msign calls, worst residual). Keys ``modman/<role>/<quantity>``."""
    out: dict[str, float] = {}
    for role in MATRIX_ROLES:
        mats = [p for n, p in model.named_parameters() if opt.roles.get(n) == role and p.ndim >= 2]
        if not mats:
            continue
        svs = [torch.linalg.svdvals(p.detach().reshape(p.shape[0], -1).double().cpu()) for p in mats]
        tops = torch.stack([s[0] for s in svs])
        conds = torch.stack([s[0] / s[-1] if s[-1] > 0 else torch.tensor(float("inf"), dtype=s.dtype) for s in svs])
        out[f"modman/{role}/sigma_max_mean"] = float(tops.mean())
        out[f"modman/{role}/sigma_max_max"] = float(tops.max())
        out[f"modman/{role}/condition_max"] = float(conds.max())
        out[f"modman/{role}/fro_norm_mean"] = float(torch.stack([p.detach().double().norm() for p in mats]).mean())
        grad_norms = getattr(opt, "last_grad_norms", {})
        if role in grad_norms:
            out[f"modman/{role}/grad_norm"] = float(grad_norms[role])
    diag = [d for d in opt.diagnostics().values() if "msign_calls" in d]
    if diag:
        out["modman/msign_calls_mean"] = sum(d["msign_calls"] for d in diag) / len(diag)
        residuals = [float(d["residual"]) for d in diag if "residual" in d]
        if residuals:
            out["modman/residual_max"] = max(residuals)
    return out


class ModmanCallback(TrainerCallback):
    """Adds ``role_summary`` to every training log (each ``logging_steps``) of a Trainer whose optimizer is a
    ``ModularOptimizer``, so the Trainer's reporting integrations (TensorBoard, W&B, ...) and its
    ``state.log_history`` carry it. Reporters see what callbacks before them wrote: ``install(trainer)`` puts it
    first (``ModmanTrainer`` does)."""

    @classmethod
    def install(cls, trainer: Trainer) -> ModmanCallback:
        """A new callback, placed before every other callback of ``trainer``."""
        callback = cls()
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    def on_log(self, args, state, control, logs=None, model=None, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
        if logs is None or "loss" not in logs or not isinstance(inner, ModularOptimizer) or model is None:
            return
        summary = role_summary(model, inner)
        logs.update(summary)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(summary)  # the Trainer recorded this log before calling back


class ModmanTrainer(Trainer):
    """A ``transformers.Trainer`` whose optimizer is ``create_optimizer(model, experiment, args, **optimizer_kwargs)``
    and whose training logs (every ``logging_steps``) carry ``role_summary`` (``ModmanCallback``).

    Args:
        experiment: a key of ``ModularOptimizer.EXPERIMENTS`` (``muon_all``, ``manifold_muon``, ``spectral_sphere``...).
        optimizer_kwargs: passed to ``ModularOptimizer`` (``lr``, ``role_lr``, ``solver``, ...).
        log_spectra: add ``role_summary`` to the training logs (an SVD of every attention/FFN matrix per log).
        *args: ``transformers.Trainer``'s.
        **kwargs: ``transformers.Trainer``'s.
    """

    def __init__(
        self,
        *args: Any,
        experiment: str = "muon_all",
        optimizer_kwargs: dict | None = None,
        log_spectra: bool = True,
        **kwargs: Any,
    ):
        from ..optim.modular import EXPERIMENTS

        if experiment not in EXPERIMENTS:
            raise UserError(f"ModmanTrainer: unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
        self.experiment, self.optimizer_kwargs = experiment, dict(optimizer_kwargs or {})
        super().__init__(*args, **kwargs)
        if log_spectra:
            ModmanCallback.install(self)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            target = self.model if model is None else model
            if target is None:
                raise UserError("ModmanTrainer: no model to build the optimizer for; pass model= to the trainer")
            self.optimizer = create_optimizer(target, self.experiment, self.args, **self.optimizer_kwargs)
        return self.optimizer
