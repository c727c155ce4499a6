"""Checkpoints of a training run: model, optimizer, schedule, RNG and data position in one file, replaced atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .runlog import atomic_file

__all__ = ["CHECKPOINT_NAME", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Every random state a run draws from (torch CPU, and CUDA when present)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file in ``run_dir``, fsync, then rename over ``checkpoint.pt``."""
    path = Path(run_dir) / CHECKPOINT_NAME
    with atomic_file(path, "wb") as fh:
        torch.save(payload, fh)
    return path


def load_checkpoint(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's checkpoint, None when there is none; a damaged file raises ValueError naming it."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); move it away to start "
                         "the run over") from None
