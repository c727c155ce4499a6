"""Run one experiment or all of them from settings (``modman train``), and tabulate their summaries."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..common.checkpoint import load_checkpoint
from ..common.config import type_problem
from .config import TrainConfig
from .recipes import COMPARISON, TRAIN_EXPERIMENTS
from .train import TrainingDiverged, train

__all__ = ["load_config_file", "run_experiments", "format_summaries"]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a JSON or TOML file (keys are TrainConfig fields; ``max-steps`` and ``max_steps`` both work)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config: {str(p)!r} does not exist or is not a file")
    try:
        if p.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(p.read_text())
        else:
            raw = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        kind = "TOML" if p.suffix == ".toml" else "JSON"
        raise UserError(
            f"--config: {str(p)!r} is not valid {kind} ({e}); write one {kind} object of settings"
        ) from None
    if not isinstance(raw, dict):
        raise UserError(f'--config: {str(p)!r} must hold one object of settings, e.g. {{"max_steps": 100}}')
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise UserError(
            f"--config: {str(p)!r} has unknown setting(s) {', '.join(unknown)}; "
            f"settings are {', '.join(sorted(fields))}"
        )
    for key, value in settings.items():
        problem = type_problem(TrainConfig, key, value)
        if problem:
            raise UserError(f"--config: {str(p)!r}: {problem}")
    return settings


def _config(settings: dict[str, Any], **override) -> TrainConfig:
    try:
        return TrainConfig(**{**settings, **override})
    except TypeError as e:
        raise UserError(f"bad settings: {e}") from None


def run_experiments(
    settings: dict[str, Any], *, run_all: bool = False, resume: bool = False, stream=None
) -> tuple[list[dict], list[str]]:
    """Train ``settings['exp']``, or every experiment (``run_all``), or without ``exp`` the five of ``COMPARISON``;
    returns the summaries and the experiments that diverged.

    Every run folder is checked before anything trains: without ``resume`` an existing run is an error.
    A run that diverges is reported and the others go on.
    """
    stream = stream or sys.stderr
    if run_all:  # a --config file's exp yields to --all
        names = list(TRAIN_EXPERIMENTS)
    else:
        names = [settings["exp"]] if "exp" in settings else list(COMPARISON)
    if len(names) > 1 and settings.get("name"):
        raise UserError("--name names one run's folder; give it with --exp NAME (each run of several is OUT/EXP)")
    if run_all and settings.get("model", "modman") != "modman":
        names.remove("modular")  # it trains its own modman.modular GPT
    configs = [_config(settings, exp=name) for name in names]
    for cfg in configs:
        cfg.resolved_device()  # an unusable --device fails before anything runs
    if not resume:
        for cfg in configs:
            saved = load_checkpoint(cfg.run_dir, keys={"step"})
            if saved is not None:
                raise UserError(
                    f"{cfg.run_dir} already holds a run (checkpoint at step {saved['step']}); "
                    "pass --resume to continue it, or choose another --out"
                )
    summaries, diverged = [], []
    for i, cfg in enumerate(configs, 1):
        if int(os.environ.get("RANK", "0")) == 0:
            print(
                f"modman train [{i}/{len(configs)}]: {cfg.exp} ({cfg.preset}, {cfg.max_steps} steps) -> {cfg.run_dir}",
                file=stream,
                flush=True,
            )
        try:
            summaries.append(train(cfg, resume=resume))
        except TrainingDiverged as e:
            print(f"modman train: {e}", file=stream, flush=True)
            diverged.append(cfg.exp)
            summaries.append(json.loads((cfg.run_dir / "summary.json").read_text()))
    return summaries, diverged


def format_summaries(summaries: list[dict]) -> str:
    """The end-of-run table: one row per experiment."""
    head = (
        f"{'experiment':<19}{'status':<10}{'steps':>6}{'train':>8}{'val':>8}{'val ppl':>9}{'tokens/s':>10}{'wall s':>8}"
    )
    lines = [head, "-" * len(head)]

    def num(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    for s in summaries:
        lines.append(
            f"{s['experiment']:<19}{s['status']:<10}{s['steps']:>6}{num(s['final_train_loss'], '8.3f')}"
            f"{num(s['final_val_loss'], '8.3f')}{num(s['final_val_ppl'], '9.2f')}"
            f"{num(s['tokens_per_sec'], '10.0f')}{num(s['wall_seconds'], '8.1f')}"
        )
    return "\n".join(lines)
