"""What every modman optimizer promises about bad numbers: a step either completes with finite weights or
changes nothing.

* ``guard_gradients`` — before the step: a NaN/Inf gradient raises ``NonFiniteError`` naming the parameters
  (or, with ``skip_nonfinite``, skips the step and counts it).
* ``step_atomically`` — around the step: the weights are copied and their optimizer state kept first (by
  reference where the optimizer replaces its state tensors, as modman's do; copied for torch.optim's); if the
  update raises, or leaves any weight NaN/Inf, everything is put back as it was and the parameters are named.
  ``opt.atomic = False`` turns it off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import UserError
from .distributed import all_ranks_agree, is_dtensor, local_tensor

__all__ = ["NonFiniteError", "nonfinite_tensors", "nonfinite_grads", "guard_gradients", "step_atomically"]


class NonFiniteError(UserError):
    """A step met a NaN/Inf gradient or produced a NaN/Inf weight; ``names`` lists the parameters.
    Nothing was changed. A ValueError, so code catching ValueError keeps working."""

    def __init__(self, message: str, names: list[str], kind: str):
        super().__init__(message)
        self.names = names
        self.kind = kind  # "gradient" or "update"


def _accumulator(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def nonfinite_tensors(named: list[tuple[str, torch.Tensor]]) -> list[str]:
    """Names whose tensor holds NaN or Inf, with one host sync per device. DTensors (FSDP2) are checked shard
    by shard and the verdict agreed by every rank, so that all ranks skip or raise together."""
    local = [(n, local_tensor(t)) for n, t in named]
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(local):
        by_device.setdefault(t.device, []).append(i)
    finite = [True] * len(local)
    for idx in by_device.values():
        # A NaN/Inf makes the sum non-finite: one reduction per tensor (~20x cheaper than isfinite().all() on
        # the CPU); a finite tensor whose sum overflows is told apart by the exact check.
        sums = torch.stack([local[i][1].sum(dtype=_accumulator(local[i][1])) for i in idx])
        flags = torch.isfinite(sums)
        if not bool(flags.all()):
            for i, ok in zip(idx, flags.tolist()):
                finite[i] = bool(ok) or bool(torch.isfinite(local[i][1]).all())
    if any(is_dtensor(t) for _, t in named):
        finite = all_ranks_agree(finite, local[0][1].device)
    return [n for (n, _), ok in zip(named, finite) if not ok]


nonfinite_grads = nonfinite_tensors  # the name the gradient check had first


def guard_gradients(opt, named: list[tuple[str, torch.Tensor]]) -> bool:
    """True when every gradient is finite. Otherwise count a skipped step and return False when
    ``opt.skip_nonfinite``, else raise NonFiniteError naming the parameters (before any weight changes)."""
    bad = nonfinite_tensors(named) if named else []
    if not bad:
        return True
    if opt.skip_nonfinite:
        opt.nonfinite_skips += 1
        return False
    raise NonFiniteError(
        f"{type(opt).__name__}: non-finite gradient (NaN or Inf) in {', '.join(bad)}; no weight was changed. "
        "Lower the learning rate or loss scale, or pass skip_nonfinite=True to skip such steps.",
        bad,
        "gradient",
    )


def _copy_state(state: dict | None, shallow: bool) -> dict | None:
    if state is None:
        return None
    return {k: _copy_value(v, shallow) for k, v in state.items()}


def _copy_value(value: Any, shallow: bool) -> Any:
    """A state entry as it is now; nested dicts (the blocks of a split matrix) copied level by level."""
    if isinstance(value, dict):
        return {k: _copy_value(v, shallow) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and not shallow:
        return value.clone()
    # shallow: the optimizer replaces its state tensors, never writes into them, so keeping them is enough
    return value


def step_atomically(
    opt, named: list[tuple[str, torch.Tensor]], owners: dict[int, Any], update: Callable[[], Any]
) -> bool:
    """Run ``update`` (which writes the parameters in ``named`` and their state in ``owners[id(p)].state``);
    if it raises or leaves a weight NaN/Inf, restore every weight and state entry and raise (NonFiniteError
    naming the parameters; ``skip_nonfinite``: count the step, return False).

    An optimizer whose ``replaces_state_tensors`` is True (modman's own: new momentum and multiplier tensors
    each step) has its state kept by reference; others' (torch.optim's in-place moments) are copied.

    ``opt.atomic = False`` runs ``update`` directly: no snapshot (one copy of the weights and state less memory
    during the step) and no restore. ``ModularOptimizer`` sets it on its sub-optimizers, whose steps run
    inside its own atomic one.
    """
    if not getattr(opt, "atomic", True) or not named:
        update()
        return True
    saved = []
    for _, p in named:
        owner = owners[id(p)]
        shallow = bool(getattr(owner, "replaces_state_tensors", False))
        saved.append((p, local_tensor(p).clone(), owner.state, _copy_state(owner.state.get(p), shallow)))

    def restore() -> None:
        for p, weight, store, state in saved:
            local_tensor(p).copy_(weight)
            if state is None:
                store.pop(p, None)
            else:
                current = store[p]
                current.clear()
                current.update(state)

    try:
        update()
    except BaseException:
        restore()  # an error or an interrupt inside the step leaves the weights as they were
        raise
    bad = nonfinite_tensors(named)
    if not bad:
        return True
    restore()
    if opt.skip_nonfinite:
        opt.nonfinite_skips += 1
        return False
    raise NonFiniteError(
        f"{type(opt).__name__}: the update of {', '.join(bad)} came out non-finite (NaN or Inf) from finite "
        "gradients; every weight and its optimizer state were restored. Lower the learning rate, or report "
        "the gradient that caused it.",
        bad,
        "update",
    )
