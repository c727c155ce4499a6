"""What every modman optimizer shares, whatever it steps: the NaN/Inf policy, data-parallel work sharing, the
counters that show the work is shared, and the ``"modman"`` entry of its state dict; and the owner step sequence
(gather to owners → update → scatter/broadcast) that ``ManifoldOptimizer`` and ``ManifoldRetraction`` run."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch.distributed.tensor import DTensor

from .distributed import (
    assign_owners,
    broadcast_from_owners,
    gather_to_owners,
    is_dtensor,
    scatter_from_owners,
    with_sharded_owners,
    world,
)

__all__ = ["OptimizerShell", "gather_owned", "return_owned"]


class OptimizerShell:
    """A mixin for ``torch.optim.Optimizer`` subclasses; call ``_init_shell`` in ``__init__``.

    ``skip_nonfinite``: a step whose gradients hold NaN/Inf changes nothing and is counted in ``nonfinite_skips``
    (False: it raises ``NonFiniteError`` naming the parameters). ``share_work``: under DDP/FSDP2 each matrix's
    update is computed by one owner rank. ``local_work``: matrices updated and msign calls made by this process.
    """

    skip_nonfinite: bool
    nonfinite_skips: int
    local_matrices: int
    local_msign_calls: int
    _owners: dict[int, int] | None

    def _init_shell(self, skip_nonfinite: bool) -> None:
        self.skip_nonfinite = bool(skip_nonfinite)
        self.nonfinite_skips = 0
        self._owners = None
        self.local_matrices = self.local_msign_calls = 0

    def _work_matrices(self) -> list[torch.Tensor]:
        """The matrices whose updates this optimizer computes (the same list, in the same order, on every rank)."""
        return [p for g in self.param_groups for p in g["params"] if p.ndim >= 2]  # type: ignore[attr-defined]

    def share_work(self, owners: dict[int, int] | None | str = "auto") -> dict[int, int] | None:
        """Compute each matrix's update on one owner rank only, which sends the result to the others.

        ``"auto"`` (default): owners assigned over ``_work_matrices()`` by ``assign_owners`` when the default
        process group has more than one rank (off in one process); ``{id(param): rank}``: these owners; None:
        off. Only owners keep a matrix's state (checkpoint with ``modman.experiments.common.checkpoint``, which saves
        each rank's part). DTensor (FSDP2) parameters get owners on their first step when none were given.
        Returns the owners in effect."""
        if isinstance(owners, str):
            if owners != "auto":
                raise ValueError(f"share_work: owners must be 'auto', a dict or None; got {owners!r}")
            size = world()[1]
            owners = assign_owners(self._work_matrices(), size) if size > 1 else None
        self._set_owners(owners)
        return owners

    def _set_owners(self, owners: dict[int, int] | None) -> None:
        self._owners = owners

    @property
    def local_work(self) -> dict[str, int]:
        """Matrices updated and msign calls made by this process so far (to check the work is shared)."""
        return {"matrices": self.local_matrices, "msign_calls": self.local_msign_calls}

    def _modman_entry(self, **extra: Any) -> dict[str, Any]:
        """The ``"modman"`` entry of the state dict: what ``load_state_dict`` checks and restores."""
        return {"nonfinite_skips": self.nonfinite_skips, "optimizer": type(self).__name__, **extra}

    def _restore_modman_entry(self, extra: dict[str, Any]) -> None:
        self.nonfinite_skips = int(extra.get("nonfinite_skips", 0))


def gather_owned(
    opt: OptimizerShell, params: list[torch.Tensor], pool: list[torch.Tensor], with_grads: bool
) -> tuple[dict[int, int], dict[int, tuple[torch.Tensor, torch.Tensor | None]]]:
    """The first half of an owner step: the owners in effect (``opt._owners``, completed for DTensors over
    ``pool``), and for each sharded parameter this rank owns its whole weight (and gradient) gathered in one
    exchange: ``{id(param): (W, G or None)}``. Collective: every rank calls it with the same lists."""
    owners = with_sharded_owners(opt._owners, params, pool, world()[1])
    opt._owners = owners or opt._owners
    sharded = [p for p in params if is_dtensor(p)]
    if not sharded:
        return owners, {}
    grads = [cast(DTensor, p.grad) for p in sharded] if with_grads else []  # FSDP2 gradients are DTensors too
    tensors = sharded + grads
    fulls = gather_to_owners(tensors, [owners[id(p)] for p in sharded] * (2 if with_grads else 1))
    full_grads = fulls[len(sharded) :] if with_grads else [None] * len(sharded)
    return owners, {id(p): (W, G) for p, W, G in zip(sharded, fulls, full_grads) if W is not None}


def return_owned(
    params: list[torch.Tensor], owners: dict[int, int], fulls: dict[int, tuple[torch.Tensor, Any]]
) -> None:
    """The second half: each owner's new weights go back to every rank — scattered into the shards of the
    sharded ones (``fulls`` from ``gather_owned``, updated in place), broadcast for replicated ones."""
    sharded = [p for p in params if is_dtensor(p)]
    if sharded:
        scatter_from_owners(
            [fulls[id(p)][0] if id(p) in fulls else None for p in sharded], sharded, [owners[id(p)] for p in sharded]
        )
    replicated = [p for p in params if id(p) in owners and not is_dtensor(p)]
    if replicated:
        broadcast_from_owners(replicated, owners)
