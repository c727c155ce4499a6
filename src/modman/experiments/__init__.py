"""Experiments: data, models and training runs built on modman's optimizers."""

from __future__ import annotations

import importlib.util

from ..errors import UserError

__all__ = ["EXTRA_MODULES", "require_extras"]

# What the experiments import beyond torch: the ``experiments`` extra of pyproject.toml.
EXTRA_MODULES = ("tqdm", "tensorboard", "matplotlib")


def require_extras(command: str) -> None:
    """Raise a UserError naming the missing modules and the install command when the extra is not installed."""
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"{command} needs {', '.join(missing)}, which the optimizers alone do not: "
            "pip install 'modman[experiments]'"
        )
