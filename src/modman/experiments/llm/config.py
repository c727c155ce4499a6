"""``TrainConfig``: the settings of one ``modman train`` run, checked when built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from ...errors import UserError
from ...optim.roles import ROLES
from ...rules import SOLVER_NAMES
from ..common.config import check_field_types, require_positive_ints
from ..common.environment import resolve_device
from .model import PRESETS
from .recipes import TRAIN_EXPERIMENTS

__all__ = ["TrainConfig", "RESUME_FREE"]

# Fields that do not change the trajectory: they may differ when a run is resumed.
RESUME_FREE = ("out", "device", "checkpoint_every", "progress", "parallel")


@dataclass
class TrainConfig:
    """Settings of one run (``modman train`` flags map onto these one to one; ``--config FILE`` sets them too)."""

    HELP: ClassVar[dict[str, str]] = {
        "exp": "the experiment: which optimizer each parameter role gets (the list: modman train --help's "
        "description; each parameter's rule: modman roles --exp NAME). default: the five of the comparison, "
        "or with --all every experiment",
        "max_steps": "optimizer steps to train (one batch each); the lr schedule ends here",
        "preset": "model and context size: tiny (dim 32, 2 layers, context 32 bytes), small (128, 4, 128), "
        "medium (256, 6, 256), large (512, 8, 512)",
        "batch_size": "sequences per optimizer step, over all processes (each of N processes takes 1/N)",
        "lr": "learning rate of the attention and FFN matrices; default: the experiment's rule's, see "
        "modman roles; for --exp modular the modular-norm step of the whole network",
        "lr_scale": "factor on every learning rate of the run, defaults and --lr/--adamw-lr/--role-lr alike",
        "matrix_lr_scale": "factor on the attention and FFN matrices' learning rates only (the method's lr; "
        "embeddings, head and norms keep theirs); modman tune's grid",
        "adamw_lr": "AdamW's learning rate of the embeddings, LM head, norm gains and vectors",
        "role_lr": "learning rate per parameter role, overriding --lr and --adamw-lr for that role "
        "(roles: attention, ffn, embedding, head, norm, other), e.g. attention=0.01,ffn=0.02",
        "weight_decay": "decoupled weight decay (per step, times the lr) of AdamW's and Muon's matrices; "
        "matrices on a manifold and vectors get none",
        "momentum": "momentum of Muon, manifold Muon and the constrained-Muon family (Nesterov), in [0, 1)",
        "warmup_steps": "steps of linear lr warmup from lr/warmup_steps to lr",
        "min_lr_ratio": "the cosine schedule ends at this fraction of each lr, in [0, 1]",
        "seed": "seed of the initial weights and of the batch order (runs with one seed are bit-for-bit repeatable)",
        "data": "a UTF-8 text file to train on, read as bytes, the last 10 %% for validation. default: the "
        "embedded Shakespeare corpus (5.1 MB)",
        "out": "folder of the runs: each writes OUT/EXP/ (metrics, spectra, TensorBoard events, checkpoints)",
        "name": "the run's folder name under OUT. default: the experiment's name",
        "eval_every": "steps between evaluations of the validation loss",
        "eval_batches": "batches (of --batch-size sequences) in each validation estimate",
        "log_every": "steps between lines of metrics.jsonl and TensorBoard points (train loss averaged over them)",
        "checkpoint_every": "steps between checkpoints (the last one is always written); --resume continues from one",
        "device": "auto (CUDA when present, else CPU), cpu, cuda or cuda:N",
        "parallel": "none, ddp or fsdp (FSDP2); ddp and fsdp run under torchrun --nproc-per-node N",
        "dtype": "float32 or float64: the weights' and the computation's floating-point type",
        "progress": "show a progress bar per run (on standard error)",
    }

    exp: str = "baseline"
    max_steps: int = 400
    preset: str = "small"
    model: str = field(
        default="modman",
        metadata={
            "help": (
                "modman (the built-in LLaMA-style decoder) or a Hugging Face architecture at the preset's shape, "
                "random init: hf:gpt2, hf:llama, hf:qwen2, hf:qwen3, hf:mistral (pip install 'modman[hf]')"
            )
        },
    )
    batch_size: int = 16
    lr: float | None = None
    lr_scale: float = 1.0
    matrix_lr_scale: float = 1.0
    solver: str = field(
        default="auto",
        metadata={
            "help": (
                "manifold Muon's solver: auto (closed form on square matrices, tracking on the others: one msign a "
                "step), certified (closed form / hybrid to a duality gap), or tracking, hybrid, newton, fixed_point, "
                "closed_form, dual_ascent"
            )
        },
    )
    adamw_lr: float = 3e-3
    role_lr: dict[str, float] = field(default_factory=dict)
    weight_decay: float = 0.1
    momentum: float = 0.95
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    seed: int = 0
    data: str | None = None
    out: str = "runs"
    name: str | None = None
    eval_every: int = 50
    eval_batches: int = 8
    log_every: int = 10
    checkpoint_every: int = 100
    device: str = "auto"
    parallel: str = "none"
    dtype: str = "float32"
    progress: bool = True

    def __post_init__(self):
        check_field_types(self)
        if self.exp not in TRAIN_EXPERIMENTS:
            raise UserError(f"--exp: unknown experiment {self.exp!r}; choose one of: {', '.join(TRAIN_EXPERIMENTS)}")
        if self.exp == "modular" and self.role_lr:
            raise UserError(
                "--role-lr does not apply to --exp modular: its per-layer lrs are the modular-norm "
                "budgets; set the whole network's step with --lr"
            )
        if self.solver not in SOLVER_NAMES:
            raise UserError(
                f"--solver: unknown manifold Muon solver {self.solver!r}; choose one of: {', '.join(SOLVER_NAMES)}"
            )
        if self.preset not in PRESETS:
            raise UserError(f"--preset: unknown preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")
        if self.model != "modman":
            from ...integrations.hf_models import HF_MODELS

            if self.model.removeprefix("hf:") not in HF_MODELS or not self.model.startswith("hf:"):
                raise UserError(
                    f"--model: unknown model {self.model!r}; choose modman or one of: "
                    f"{', '.join('hf:' + n for n in HF_MODELS)}"
                )
            if self.exp == "modular":
                raise UserError("--exp modular trains its own modman.modular GPT; use --model modman with it")
        require_positive_ints(
            self, ("max_steps", "batch_size", "eval_every", "eval_batches", "log_every", "checkpoint_every")
        )
        if self.dtype not in ("float32", "float64"):
            raise UserError(f"--dtype must be float32 or float64; got {self.dtype!r}")
        if self.parallel not in ("none", "ddp", "fsdp"):
            raise UserError(f"--parallel must be none, ddp or fsdp; got {self.parallel!r}")
        if self.parallel == "fsdp" and self.exp == "modular":
            raise UserError(
                "--exp modular runs with --parallel none or ddp: its modular-norm steps act on whole "
                "modules, which FSDP2 shards"
            )
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise UserError(f"--warmup-steps must be an integer >= 0; got {self.warmup_steps!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"--min-lr-ratio must be in [0, 1]; got {self.min_lr_ratio!r}")
        for name in ("lr_scale", "matrix_lr_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise UserError(f"--{name.replace('_', '-')} must be a number > 0; got {value!r}")
        if self.name is not None and (not self.name or self.name in (".", "..") or any(c in self.name for c in "/\\")):
            raise UserError(f"--name: {self.name!r} is not a folder name; use letters, digits, '-', '_' or '.'")
        unknown = [r for r in self.role_lr if r not in ROLES]
        if unknown:
            raise UserError(f"--role-lr: unknown role(s) {', '.join(unknown)}; roles are {', '.join(ROLES)}")

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def run_dir(self) -> Path:
        """``OUT/NAME``, where the name defaults to the experiment's."""
        return Path(self.out) / (self.name or self.exp)
