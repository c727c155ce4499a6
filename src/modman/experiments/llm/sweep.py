"""``modman sweep``: experiments × learning rates × weight decays × seeds, resumable, one run folder each.

Run ``OUT/EXP--lr-L--wd-W--seed-S/`` is an ordinary ``modman train`` run (``--name``), so ``modman
analyze OUT`` reads a sweep like any other set of runs. A learning rate is written either as a multiple of
every default lr of the experiment (``0.5x``: ``--lr-scale``) or as the lr of its attention and FFN
matrices (``0.02``: ``--lr``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import UserError
from .config import RESUME_FREE, TrainConfig
from .recipes import TRAIN_EXPERIMENTS
from .train import TrainingDiverged, train

__all__ = ["LrSetting", "parse_lrs", "parse_list", "sweep_configs", "run_sweep", "ended_summary"]


@dataclass(frozen=True)
class LrSetting:
    """One point of the lr grid: ``scale`` multiplies every default lr, or ``lr`` sets the matrices' lr."""

    scale: float = 1.0
    lr: float | None = None

    @property
    def tag(self) -> str:
        return f"{self.scale:g}x" if self.lr is None else f"{self.lr:g}"

    def settings(self) -> dict[str, Any]:
        return {"lr_scale": self.scale} if self.lr is None else {"lr": self.lr}


def parse_lrs(text: str) -> list[LrSetting]:
    """``"0.5x,1x,2x"`` (multiples of the defaults) or ``"0.01,0.02"`` (matrix lrs); not both kinds at once."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(
            "--lrs is empty; give e.g. 0.5x,1x,2x (multiples of each experiment's default lrs) or "
            "0.01,0.02 (the lr of the attention and FFN matrices)"
        )
    scaled = [t.endswith("x") for t in items]
    if any(scaled) and not all(scaled):
        raise UserError(f"--lrs {text!r} mixes multiples (…x) and absolute lrs; use one kind, e.g. 0.5x,1x,2x")
    out = []
    for t in items:
        try:
            value = float(t[:-1] if t.endswith("x") else t)
        except ValueError:
            raise UserError(f"--lrs: {t!r} is not a number; give e.g. 0.5x,1x,2x or 0.01,0.02") from None
        if not value > 0:
            raise UserError(f"--lrs: {t!r} must be > 0")
        out.append(LrSetting(scale=value) if t.endswith("x") else LrSetting(lr=value))
    return out


def parse_list(text: str, kind: type, option: str) -> list:
    """``"0,1,2"`` → ``[0, 1, 2]`` for ``--seeds`` / ``--weight-decays``; a bad item names the option."""
    try:
        values = [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{option}: {text!r} is not a comma-separated list of {kind.__name__}s (e.g. 0,1,2)") from None
    if not values:
        raise UserError(f"{option} is empty; give e.g. 0,1,2")
    if len(set(values)) != len(values):
        raise UserError(f"{option}: {text!r} repeats a value")
    return values


def sweep_configs(
    settings: dict[str, Any], exps: list[str], lrs: list[LrSetting], weight_decays: list[float], seeds: list[int]
) -> list[TrainConfig]:
    """Every run of the grid, as checked TrainConfigs (an unknown experiment or bad setting fails here)."""
    unknown = [e for e in exps if e not in TRAIN_EXPERIMENTS]
    if unknown:
        raise UserError(
            f"--exp: unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(TRAIN_EXPERIMENTS)}"
        )
    for key in ("exp", "name", "lr", "lr_scale", "weight_decay", "seed"):
        if key in settings:
            raise UserError(f"modman sweep sets {key} for each run itself; leave it out of the flags and --config")
    configs = []
    for exp, lr, wd, seed in itertools.product(exps, lrs, weight_decays, seeds):
        name = f"{exp}--lr-{lr.tag}--wd-{wd:g}--seed-{seed}"
        try:
            configs.append(TrainConfig(**settings, **lr.settings(), exp=exp, name=name, weight_decay=wd, seed=seed))
        except TypeError as e:
            raise UserError(f"bad settings: {e}") from None
    return configs


def ended_summary(cfg: TrainConfig) -> dict | None:
    """The summary of a run that already finished, or diverged, with these very settings; else None."""
    path = cfg.run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        return None
    now = dataclasses.asdict(cfg)
    saved = summary.get("config", {}) if isinstance(summary, dict) else {}
    if not saved or any(now.get(k) != v for k, v in saved.items() if k not in RESUME_FREE):
        return None  # train(resume=True) names the differing settings
    if summary.get("status") == "diverged" or (
        summary.get("status") == "finished" and summary.get("steps") == cfg.max_steps
    ):
        return summary
    return None


def run_sweep(configs: list[TrainConfig], log: Callable[[str], None] | None = None) -> list[dict]:
    """Run each config; returns the summaries.

    A finished run is skipped (``train(resume=True)`` returns its summary), a partial one continues from its
    checkpoint, one that diverged with the same settings is not run again. A folder holding a run with other
    settings is an error naming them.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    for cfg in configs:
        cfg.resolved_device()
    summaries = []
    for i, cfg in enumerate(configs, 1):
        done = ended_summary(cfg)
        if done is not None:
            log(f"[{i}/{len(configs)}] {cfg.run_dir}: {done['status']} before, skipped")
            summaries.append(done)
            continue
        log(f"[{i}/{len(configs)}] {cfg.run_dir}")
        try:
            summaries.append(train(cfg, resume=True))
        except TrainingDiverged as e:
            log(f"  {e}")
            summaries.append(json.loads((cfg.run_dir / "summary.json").read_text()))
    return summaries
