"""The LLM experiment plan's constraint wrappers: step any optimizer, then retract its matrices onto a manifold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from ..errors import UserError
from ..manifolds import Manifold, SpectralBall, Stiefel
from .base import check_split, guard_gradients, matrix_shape, run_closure, split_blocks
from .distributed import (
    all_ranks_agree,
    full_tensor,
    is_dtensor,
    world,
    write_full,
)
from .distributed import local_tensor as _local
from .guard import step_atomically
from .shell import OptimizerShell, gather_owned, return_owned
from .state import check_state_dict, moment_shape, param_name

__all__ = ["ManifoldRetraction", "StiefelRetraction", "SpectralRetraction"]


class ManifoldRetraction(OptimizerShell, Optimizer):
    r"""``W ← retract(step_base(W))`` for each retracted matrix; everything else as the base optimizer.

    Wraps a built optimizer (e.g. ``torch.optim.AdamW``) and shares its ``param_groups`` and ``state``,
    so lr schedulers, ``zero_grad`` and ``state_dict`` act on the base. Every parameter of >= 2 dims in
    the base optimizer is retracted (or only ``params`` when given); conv kernels as (out, rest). A base param
    group with ``split=k`` has each of its matrices retracted as k blocks of the out side (fused q, k, v;
    ``transposed=True``: of the last dim).
    The retracted weights are projected onto the manifold when the wrapper is built.

    Args:
        base_optimizer: the optimizer that takes the Euclidean step.
        manifold: where the retracted matrices live (``Stiefel``, ``SpectralBall``, ...).
        params: the tensors to keep on the manifold (default: every >= 2-D parameter of the base).
        skip_nonfinite: skip (and count) a step with NaN/Inf gradients instead of raising ValueError.
    """

    msign_per_retraction = 0

    def __init__(self, base_optimizer: Optimizer, manifold: Manifold, params=None, *, skip_nonfinite: bool = False):
        owner = type(self).__name__
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(f"{owner} needs a torch.optim.Optimizer to wrap; got {type(base_optimizer)!r}")
        if not isinstance(manifold, Manifold):
            raise TypeError(f"{owner}: manifold must be a modman.manifolds.Manifold; got {type(manifold)!r}")
        self.manifold = manifold
        names = {
            id(p): param_name(g, i, gi)
            for gi, g in enumerate(base_optimizer.param_groups)
            for i, p in enumerate(g["params"])
        }
        for gi, g in enumerate(base_optimizer.param_groups):
            for i, p in enumerate(g["params"]):
                if p.is_complex():
                    raise TypeError(
                        f"{owner}: {param_name(g, i, gi)} has complex dtype {p.dtype}; {manifold!r} "
                        "holds real matrices. Optimize complex tensors outside this wrapper."
                    )
        if params is None:
            retracted = [p for g in base_optimizer.param_groups for p in g["params"] if p.ndim >= 2]
        else:
            retracted = list(params)
            for p in retracted:
                if id(p) not in names:
                    raise UserError(
                        f"{owner}: a tensor of shape {tuple(p.shape)} in params is not "
                        "optimized by the base optimizer; pass only the base's parameters"
                    )
                if p.ndim < 2:
                    raise UserError(
                        f"{owner}: {names[id(p)]} has shape {tuple(p.shape)}; {manifold!r} needs "
                        ">= 2-D tensors. Leave vectors to the base optimizer (omit them from params)."
                    )
        for gi, g in enumerate(base_optimizer.param_groups):
            check_split(owner, g, gi, {id(p) for p in retracted})
        self.base_optimizer = base_optimizer
        self.retracted = retracted
        self._names = names
        self._init_shell(skip_nonfinite)
        self._msign_calls: dict[int, int] = {}
        super().__init__(base_optimizer.param_groups, base_optimizer.defaults)
        # Share the base's groups and state: schedulers and state_dict then act on the base directly.
        self.param_groups = base_optimizer.param_groups
        self.state = base_optimizer.state
        groups = self._groups()
        with torch.no_grad():
            for p in retracted:
                full = full_tensor(p).clone()  # a DTensor (FSDP2) is projected whole, identically on every rank
                for block in split_blocks(full.view(matrix_shape(p)), groups[id(p)]):
                    block.copy_(self.manifold.ensure(block))
                if is_dtensor(p):
                    write_full(p, full)
                else:
                    p.copy_(full)

    def _groups(self) -> dict[int, dict]:
        """``{id(param): its param group}`` of the base optimizer (its options ``split`` and ``transposed``)."""
        return {id(p): g for g in self.base_optimizer.param_groups for p in g["params"]}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = run_closure(closure)
        with_grad = [(self._names[id(p)], p) for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not guard_gradients(self, [(n, p.grad) for n, p in with_grad]):
            return loss
        step_atomically(self, with_grad, {id(p): self for _, p in with_grad}, self._step)
        return loss

    def _step(self) -> None:
        """The base optimizer's step, then the retraction of every retracted matrix that moved."""
        # A weight the base step leaves untouched keeps its exact bits: snapshot the zero-gradient ones.
        targets = [p for p in self.retracted if p.grad is not None and p.numel() > 0]
        idle = {id(p): _local(p).clone() for p in targets if not bool(_local(p.grad).any())}
        self.base_optimizer.step()  # elementwise: every rank runs it (on its shards under FSDP2)
        rank = world()[0]
        # A sharded weight is idle only when it is unchanged on every rank.
        unchanged = [id(p) in idle and torch.equal(idle[id(p)], _local(p)) for p in targets]
        if any(is_dtensor(p) for p in targets):
            unchanged = all_ranks_agree(unchanged, _local(targets[0]).device)
        moving = [p for p, still in zip(targets, unchanged) if not still]
        for p, still in zip(targets, unchanged):
            if still:
                self._msign_calls[id(p)] = 0
        owners, fulls = gather_owned(self, moving, self.retracted, False)  # FSDP2: sharded ones gathered on owners
        groups = self._groups()
        for p in moving:
            if owners.get(id(p), rank) == rank:
                full = fulls[id(p)][0] if is_dtensor(p) else p
                if not bool(torch.isfinite(full).all()):
                    continue  # left for the step's check to report and undo (a retraction's SVD would raise)
                W = full.reshape(matrix_shape(p))
                blocks = split_blocks(W, groups[id(p)])  # fused q, k, v: each block on the manifold
                retracted = [self.manifold.retract(block) for block in blocks]
                for block, new in zip(blocks, retracted):
                    block.copy_(new)
                if W.data_ptr() != full.data_ptr():  # reshape copied (a non-contiguous weight): write back
                    full.copy_(W.view_as(full))
                self._msign_calls[id(p)] = self.msign_per_retraction * len(blocks)
                self.local_matrices += 1
                self.local_msign_calls += self.msign_per_retraction * len(blocks)
        return_owned(moving, owners, fulls)

    def _work_matrices(self) -> list[torch.Tensor]:
        return list(self.retracted)

    def diagnostics(self) -> dict[str, dict[str, Any]]:
        """msign calls of the last step per retracted matrix."""
        return {self._names[id(p)].strip("'"): {"msign_calls": self._msign_calls.get(id(p), 0)} for p in self.retracted}

    def state_dict(self) -> dict[str, Any]:
        sd = self.base_optimizer.state_dict()
        sd["modman"] = self._modman_entry(base=type(self.base_optimizer).__name__)
        return sd

    def validate_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Raise ValueError unless ``state_dict`` was saved by this wrapper, around the same kind of base
        optimizer, for these parameters."""
        extra = check_state_dict(self, state_dict, moment_shape)
        base = extra.get("base")
        if base is not None and base != type(self.base_optimizer).__name__:
            raise UserError(
                f"{type(self).__name__}.load_state_dict: this state dict was saved around {base}, not "
                f"{type(self.base_optimizer).__name__}; wrap the same base optimizer to load it"
            )
        return extra

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        extra = self.validate_state_dict(state_dict)
        state_dict = {k: v for k, v in state_dict.items() if k != "modman"}
        self.base_optimizer.load_state_dict(state_dict)
        # The base rebinds its groups and state on load; share the new ones.
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self._restore_modman_entry(extra)


class StiefelRetraction(ManifoldRetraction):
    r"""``W ← r·msign(step_base(W))``: the LLM experiment plan's ``StiefelOptimizer`` (``stiefel_*`` experiments).

    Args:
        base_optimizer: as ``ManifoldRetraction``.
        params: as ``ManifoldRetraction``.
        skip_nonfinite: as ``ManifoldRetraction``.
        radius: the common singular value r.
        retraction: msign method of the retraction (see ``Stiefel``).
        retraction_steps: msign steps of the retraction.
    """

    msign_per_retraction = 1

    def __init__(
        self,
        base_optimizer: Optimizer,
        params=None,
        *,
        radius: float = 1.0,
        retraction: str = "polar_express",
        retraction_steps: int | None = None,
        skip_nonfinite: bool = False,
    ):
        super().__init__(
            base_optimizer, Stiefel(radius, retraction, retraction_steps), params, skip_nonfinite=skip_nonfinite
        )


class SpectralRetraction(ManifoldRetraction):
    r"""``W ← clip_r(step_base(W))``, singular values capped at r (the LLM experiment plan's ``spectral_all``)."""

    def __init__(self, base_optimizer: Optimizer, params=None, *, radius: float = 1.0, skip_nonfinite: bool = False):
        super().__init__(base_optimizer, SpectralBall(radius), params, skip_nonfinite=skip_nonfinite)
