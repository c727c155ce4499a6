"""The hyperparameters every modman optimizer checks when a param group is added: one rule per name."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from ..errors import UserError
from ..msign import METHODS
from ..rules import SOLVER_NAMES
from ..rules.muon import ADJUST_LR_FNS

__all__ = ["check_hyperparameters", "fill_group_defaults"]


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# name -> (predicate, what a valid value is). Checked for every param group that has the key.
_HYPERPARAMETER_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": (lambda v: _finite_number(v) and v >= 0, "a finite number >= 0"),
    "momentum": (lambda v: _finite_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (lambda v: _finite_number(v) and v >= 0, "a finite number >= 0"),
    "nesterov": (lambda v: isinstance(v, bool), "True or False"),
    "radius": (lambda v: _finite_number(v) and v > 0, "a finite number > 0"),
    "norm": (lambda v: v is None or (_finite_number(v) and v > 0), "None or a finite number > 0"),
    "alpha": (lambda v: _finite_number(v) and v >= 0, "a finite number >= 0"),
    "steps": (
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "None or an int >= 1",
    ),
    "tol": (lambda v: _finite_number(v) and v >= 0, "a finite number >= 0"),
    "solver": (lambda v: v in SOLVER_NAMES, f"one of {list(SOLVER_NAMES)}"),
    "warm_start": (lambda v: isinstance(v, bool), "True or False"),
    "tangent": (lambda v: isinstance(v, bool), "True or False"),
    "transposed": (lambda v: isinstance(v, bool), "True or False"),
    "split": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an int >= 1"),
    "lanczos_steps": (
        lambda v: v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "'auto', None (exact) or an int >= 1",
    ),
    "sso_evals": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an int >= 1"),
    "retraction": (lambda v: v in ("auto", "msign"), "'auto' or 'msign'"),
    "msign_method": (lambda v: v in METHODS, f"one of {list(METHODS)}"),
    "msign_steps": (
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
        "None or an int >= 0",
    ),
    "msign_dtype": (
        lambda v: v is None or v == "auto" or v in (torch.float32, torch.float64, torch.bfloat16, torch.float16),
        "None, 'auto' or a torch floating dtype",
    ),
    "workers": (
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "None or an int >= 1",
    ),
    "adjust_lr_fn": (lambda v: v in ADJUST_LR_FNS, f"one of {list(ADJUST_LR_FNS)}"),
}


def check_hyperparameters(owner: str, group: dict) -> None:
    """Raise ValueError naming the first hyperparameter of ``group`` that is out of range."""
    for key, (valid, requirement) in _HYPERPARAMETER_RULES.items():
        if key in group and not valid(group[key]):
            raise UserError(f"{owner}: invalid {key}={group[key]!r}; it must be {requirement}")


def fill_group_defaults(opt: Optimizer) -> None:
    """Give every param group the hyperparameters it lacks from ``opt.defaults``: a state dict saved before a
    hyperparameter existed (torch's ``load_state_dict`` takes the saved groups as they are) then loads and steps."""
    for group in opt.param_groups:
        for key, value in opt.defaults.items():
            group.setdefault(key, value)
