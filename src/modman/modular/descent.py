"""``ModularDescent``: train any modman.modular network with its modular-norm budgets.

Update rule, per atom i with coefficient c_i (``net.budgets()``):
``M_i ← β·M_i + (1 − β)·G_i;  W_i ← retract_i(W_i − (η/c_i)·d_i(M_i))``, with ``d_i`` the atom's unit-norm
direction (manifold Muon for Linear, hyperspherical for Embed). Each atom is one param group whose ``lr`` is
``η/c_i`` and whose ``budget`` is ``1/c_i``, so torch's lr schedulers scale every budget together.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError
from ..optim.concurrent import run_concurrently
from ..optim.distributed import broadcast_from_owners, is_dtensor, world
from ..optim.guard import guard_gradients, step_atomically
from ..optim.hyperparameters import check_hyperparameters, fill_group_defaults
from ..optim.shell import OptimizerShell
from ..optim.state import check_state_dict
from .module import Module

__all__ = ["ModularDescent"]


class ModularDescent(OptimizerShell, torch.optim.Optimizer):
    """Momentum + dualize in the modular norm + retraction, one param group per atom.

    Args:
        net: a modman.modular ``Module`` (its weights are projected onto their manifolds here, once).
        lr: η, the size of the whole update in the modular norm.
        momentum: β of the gradient average (0 for none).
        tangent: directions in each manifold's tangent space (True) or unconstrained duals (False).
        skip_nonfinite: skip a step whose gradients hold NaN/Inf instead of raising.
        warm_start: each Linear atom's manifold Muon solve starts from its previous multiplier Λ, kept in the
            optimizer state (``"multiplier"``, with the last ``"iterations"`` and ``"residual"``).
        workers: atoms updated at a time, each in its own thread on its own CUDA stream
            (``modman.optim.concurrent``); None: 4 on CUDA, 1 (in turn) on the CPU. Same results either way.
    """

    def __init__(
        self,
        net: Module,
        lr: float = 0.1,
        momentum: float = 0.9,
        *,
        tangent: bool = True,
        skip_nonfinite: bool = False,
        warm_start: bool = True,
        workers: int | None = None,
    ):
        if not isinstance(net, Module):
            raise TypeError(f"ModularDescent: net must be a modman.modular Module; got {type(net).__name__}")
        if not lr > 0:
            raise UserError(f"ModularDescent: lr must be > 0; got {lr!r}")
        if not 0 <= momentum < 1:
            raise UserError(f"ModularDescent: momentum must be in [0, 1); got {momentum!r}")
        check_hyperparameters("ModularDescent", {"warm_start": warm_start, "workers": workers})
        pairs = net.budgets()
        if not pairs:
            raise UserError("ModularDescent: the network has no atoms (no weights) to train")
        if any(is_dtensor(atom.weight) for atom, _ in pairs):
            raise TypeError(
                "ModularDescent: the network's weights are DTensors (FSDP2); its modular-norm steps act "
                "on whole modules. Train it unsharded, or under DDP (share_work splits the atoms)."
            )
        net.project()
        groups = [
            {
                "params": [atom.weight],
                "lr": lr / c,
                "budget": 1.0 / c,
                "role": getattr(atom, "role", "other"),
                "rule": "modular",
            }
            for atom, c in pairs
        ]
        super().__init__(groups, {"lr": lr, "momentum": momentum, "tangent": tangent, "warm_start": warm_start})
        self._atoms = [atom for atom, _ in pairs]
        self._init_shell(skip_nonfinite)
        names = {id(p): n for n, p in net.named_parameters()}
        self._names = [names[id(a.weight)] for a in self._atoms]
        self.roles = {names[id(a.weight)]: g["role"] for a, g in zip(self._atoms, self.param_groups)}
        self.assignment = {name: "modular" for name in self.roles}
        self.workers = workers
        self._streams: dict[Any, Any] = {}  # CUDA streams of the concurrent lanes, by device

    owner_keeps_state = True  # under share_work only an atom's owner rank keeps its momentum
    replaces_state_tensors = True  # new momentum and multiplier tensors each step (see optim.guard)

    def _work_matrices(self) -> list[torch.Tensor]:
        """Each atom's weight: under DDP one owner rank computes its direction and retraction (``share_work``)."""
        return [g["params"][0] for g in self.param_groups]

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        fill_group_defaults(self)  # state dicts saved before warm_start existed

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        named = [
            (self._names[i], g["params"][0]) for i, g in enumerate(self.param_groups) if g["params"][0].grad is not None
        ]
        if not guard_gradients(self, [(name, p.grad) for name, p in named]):
            return loss
        step_atomically(self, named, {id(p): self for _, p in named}, self._step)
        return loss

    def _step(self) -> None:
        rank, owners = world()[0], self._owners or {}
        tasks: dict[torch.device, list] = {}
        for lane, (atom, group) in enumerate(zip(self._atoms, self.param_groups)):
            p = group["params"][0]
            if p.grad is None or p.numel() == 0 or owners.get(id(p), rank) != rank:
                continue
            self.local_matrices += 1
            tasks.setdefault(p.device, []).append((lane, lambda atom=atom, group=group: self._update(atom, group)))
        for device, work in tasks.items():
            run_concurrently(work, device, self.workers, self._streams)
        if owners:
            broadcast_from_owners(
                [g["params"][0] for g in self.param_groups if g["params"][0].grad is not None], owners
            )

    def state_dict(self):
        sd = super().state_dict()
        sd["modman"] = self._modman_entry()
        return sd

    def validate_state_dict(self, state_dict) -> dict:
        """Raise ValueError unless ``state_dict`` was saved by a ModularDescent over the same atoms."""

        def shape(p, key):
            return {"momentum_buffer": tuple(p.shape), "multiplier": (min(p.shape),) * 2}.get(key)

        legacy = (
            isinstance(state_dict, dict)
            and "modman" not in state_dict
            and all("budget" in g for g in state_dict.get("param_groups", [{}]))
        )  # earlier versions had no "modman" entry
        return check_state_dict(self, state_dict, shape, modman=not legacy)

    def load_state_dict(self, state_dict) -> None:
        extra = self.validate_state_dict(state_dict)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "modman"})
        self._restore_modman_entry(extra)

    def _update(self, atom, group) -> None:
        p = group["params"][0]
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = p.grad.detach().clone()
        buf = state["momentum_buffer"] = state["momentum_buffer"].lerp(p.grad, 1 - group["momentum"])
        if not bool(buf.any()):  # nothing to follow: keep the weight bit for bit (no retraction rounding)
            return
        delta = atom.direction(buf, tangent=group["tangent"], state=state if group["warm_start"] else None)
        p.copy_(atom.retract_step(delta, group["lr"]))
