"""Checks that a state dict fits an optimizer before it is loaded: same kind of optimizer, same parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from ..errors import UserError

__all__ = ["TORCH_MOMENTS", "moment_shape", "check_state_dict", "param_name"]


def param_name(group: dict, index: int, group_index: int) -> str:
    """The parameter's name when the optimizer got named parameters, else its position."""
    names = group.get("param_names")
    if names is not None and index < len(names):
        return repr(names[index])
    return f"param_groups[{group_index}]['params'][{index}]"


# Per-coordinate state tensors of torch.optim's optimizers: each has its parameter's shape.
TORCH_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "acc_delta", "sum")


def moment_shape(p: torch.Tensor, key: str) -> tuple[int, ...] | None:
    """The shape of a torch.optim per-coordinate state tensor (None for other keys)."""
    return tuple(p.shape) if key in TORCH_MOMENTS else None


def check_state_dict(
    opt: Optimizer,
    state_dict: dict[str, Any],
    expected: Callable[[torch.Tensor, str], tuple[int, ...] | None],
    *,
    modman: bool = True,
) -> dict[str, Any]:
    """Refuse, before anything changes, a state dict that another kind of optimizer saved or that was saved for
    other parameters (counts or shapes); returns its ``"modman"`` entry. ``expected(p, key)`` is the shape of a
    state tensor (None: any). ``modman=False``: a torch.optim state dict (no ``"modman"`` entry to check)."""
    owner = f"{type(opt).__name__}.load_state_dict"
    if not isinstance(state_dict, dict) or "param_groups" not in state_dict or "state" not in state_dict:
        got = (
            f"a dict with keys {sorted(map(str, state_dict))[:6]}"
            if isinstance(state_dict, dict)
            else type(state_dict).__name__
        )
        raise UserError(
            f"{owner}: expected a dict from an optimizer's state_dict() (with 'state' and 'param_groups'); got {got}"
        )
    extra = state_dict.get("modman", {} if not modman else None)
    if not isinstance(extra, dict):
        raise UserError(
            f"{owner}: this state dict was not saved by a modman optimizer (it has no 'modman' "
            "entry); load it into the kind of optimizer that saved it"
        )
    saved_type = extra.get("optimizer")  # absent in state dicts of earlier versions
    if saved_type is not None and saved_type != type(opt).__name__:
        raise UserError(
            f"{owner}: this state dict was saved by {saved_type}, not {type(opt).__name__}; build a "
            f"{saved_type} to load it, or start this optimizer fresh"
        )
    ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    params = [(param_name(g, i, gi), p) for gi, g in enumerate(opt.param_groups) for i, p in enumerate(g["params"])]
    if len(ids) != len(params) or len(state_dict["param_groups"]) != len(opt.param_groups):
        raise UserError(
            f"{owner}: the state dict has {len(ids)} parameters in {len(state_dict['param_groups'])} "
            f"groups, this optimizer {len(params)} in {len(opt.param_groups)}; build the optimizer over "
            "the same parameters and groups as the one that saved it"
        )
    for i, (name, p) in zip(ids, params):
        for key, value in state_dict["state"].get(i, {}).items():
            want = expected(p, key) if isinstance(value, torch.Tensor) and value.ndim > 0 else None
            if want is not None and tuple(value.shape) != tuple(want):
                raise UserError(
                    f"{owner}: the saved {key!r} of {name} has shape {tuple(value.shape)}, but this "
                    f"parameter needs {tuple(want)} (its shape is {tuple(p.shape)}); the state dict "
                    "was saved for another model"
                )
    return extra
