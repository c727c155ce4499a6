"""The step loop every modman optimizer shares: validation, bad-gradient handling, reshaping, momentum.

Concrete optimizers only say how one matrix moves (``_update``) and where it starts (``_init_param``);
the math lives in ``modman.rules`` and ``modman.manifolds``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, cast

import torch
from torch.optim import Optimizer

from ..errors import UserError
from ..msign import msign
from .distributed import is_dtensor, world, write_full
from .guard import NonFiniteError, guard_gradients, nonfinite_grads, step_atomically
from .hyperparameters import check_hyperparameters, fill_group_defaults
from .shell import OptimizerShell, gather_owned, return_owned
from .state import check_state_dict, moment_shape, param_name

__all__ = [
    "ManifoldOptimizer",
    "fill_group_defaults",
    "param_name",
    "matrix_shape",
    "out_in",
    "nonfinite_grads",
    "guard_gradients",
    "run_closure",
    "NonFiniteError",
    "check_state_dict",
    "moment_shape",
    "split_blocks",
    "check_split",
]


def matrix_shape(p: torch.Tensor) -> tuple[int, int]:
    """(out, rest): a conv kernel (out, in, kh, kw) is treated as the matrix (out, in·kh·kw)."""
    return p.shape[0], p.numel() // p.shape[0] if p.shape[0] else 0


def out_in(shape: tuple[int, ...] | torch.Size, group: dict) -> tuple[int, ...]:
    """The matrix's (out, in) sides for rules that read them: ``shape`` reversed for a weight stored (in, out)
    (param group option ``transposed=True``, e.g. Hugging Face's ``Conv1D``)."""
    return tuple(shape)[::-1] if group.get("transposed") else tuple(shape)


def split_blocks(W: torch.Tensor, group: dict) -> list[torch.Tensor]:
    """W's blocks under the param group option ``split=k``: k equal views along the out side (dim 0, or the last
    dim of a weight stored (in, out), ``transposed=True``), each a matrix of its own for every rule; ``[W]``
    without it. Fused q, k, v projections (``modman.optim.roles.fused_projections``) are split this way."""
    k = group.get("split", 1)
    return [W] if k == 1 else list(W.chunk(k, dim=-1 if group.get("transposed") else 0))


def check_split(owner: str, group: dict, group_index: int, only: set[int] | None = None) -> None:
    """Raise ValueError unless every parameter of ``group`` (whose id is in ``only``, when given) divides into its
    ``split`` blocks (2-D, out side)."""
    k = group.get("split", 1)
    if not (isinstance(k, int) and k > 1):
        return
    axis = -1 if group.get("transposed") else 0
    for i, p in enumerate(group["params"]):
        if only is not None and id(p) not in only:
            continue
        if p.ndim != 2 or p.shape[axis] % k:
            raise UserError(
                f"{owner}: split={k} needs 2-D weights whose out side divides into {k} blocks; "
                f"{param_name(group, i, group_index)} has shape {tuple(p.shape)}"
                + (" (stored (in, out))" if axis else "")
                + "; drop split from its param group"
            )


def run_closure(closure: Callable[[], Any] | None):
    """torch.optim's closure convention: re-evaluate the loss with gradients enabled; None without a closure."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class ManifoldOptimizer(OptimizerShell, Optimizer):
    """Base class: ``step`` validates every gradient, then calls ``_update`` on each parameter.

    Subclasses set ``matrix_only`` and implement ``_update(W, G, state, group)``, which must write the
    new weight into ``W`` in place (W is a view of the parameter, reshaped to (out, rest) for matrix
    optimizers), and optionally ``_init_param(W, group)`` (e.g. projection onto the manifold).

    Args:
        skip_nonfinite: if True a step whose gradients hold NaN/Inf changes nothing and is counted in
            ``nonfinite_skips``; if False (default) it raises ValueError naming the parameters.
    """

    matrix_only = True
    owner_keeps_state = True  # under work sharing only a parameter's owner rank holds its state
    # Steps put new tensors into the state instead of writing into the old ones, so an atomic step keeps the
    # old state by reference (no copy). Subclasses must keep to this.
    replaces_state_tensors = True
    diagnostic_keys: tuple[str, ...] = ("step", "msign_calls", "iterations", "residual", "solver")

    def __init__(self, params, defaults: dict, *, skip_nonfinite: bool = False):
        check_hyperparameters(type(self).__name__, defaults)
        self._init_shell(skip_nonfinite)
        super().__init__(params, defaults)

    def _work_matrices(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    # ---------------------------------------------------------------- parameter groups
    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group, gi = self.param_groups[-1], len(self.param_groups) - 1
        try:
            check_hyperparameters(type(self).__name__, group)
            for i, p in enumerate(group["params"]):
                self._check_param(p, param_name(group, i, gi))
            check_split(type(self).__name__, group, gi)
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise
        with torch.no_grad():
            for p in group["params"]:
                W, writeback = self._as_update_view(p)
                for block in split_blocks(W, group):
                    self._init_param(block, group)
                writeback()

    def _check_param(self, p: torch.Tensor, name: str) -> None:
        if self.matrix_only and p.ndim < 2:
            raise UserError(
                f"{type(self).__name__} got {name} of shape {tuple(p.shape)}: it updates matrices (>= 2-D "
                "tensors; >2-D ones are treated as (out, rest)). Give vectors and scalars to torch.optim.AdamW, "
                "or put a vector on a sphere with modman.optim.HypersphericalDescent."
            )
        if not self.matrix_only and p.ndim < 1:
            raise UserError(f"{type(self).__name__} got {name}, a 0-D tensor: give scalars to torch.optim.AdamW.")
        if p.is_complex():
            raise TypeError(f"{type(self).__name__} got {name} with complex dtype {p.dtype}; only real tensors")

    def _init_param(self, W: torch.Tensor, group: dict) -> None:
        """Called once per matrix (per block under ``split``) when its group is added (no-op by default)."""

    def _as_update_view(self, p: torch.Tensor):
        """A writable tensor the update acts on, and a callable that writes it back into ``p``. For a DTensor
        the whole tensor (gathered on every rank: collective, used when parameters are added)."""
        shape = matrix_shape(p) if self.matrix_only else tuple(p.shape)
        if is_dtensor(p):
            W = p.full_tensor().reshape(shape)
            return W, lambda: write_full(p, W)
        if p.is_contiguous():
            return p.view(shape), lambda: None
        W = p.reshape(shape).clone()
        return W, lambda: p.copy_(W.view_as(p))

    # ---------------------------------------------------------------- the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One update of every parameter with a gradient; returns the closure's loss (if any)."""
        loss = run_closure(closure)
        work = [
            (group, p, param_name(group, i, gi))
            for gi, group in enumerate(self.param_groups)
            for i, p in enumerate(group["params"])
            if p.grad is not None
        ]
        for _, p, name in work:
            if p.grad.is_sparse:
                raise TypeError(f"{type(self).__name__}: {name} has a sparse gradient, which is not supported")
        if not guard_gradients(self, [(name, p.grad) for _, p, name in work]):
            return loss
        work = [(group, p, name) for group, p, name in work if p.numel() > 0]  # an empty matrix has no update
        step_atomically(
            self, [(name, p) for _, p, name in work], {id(p): self for _, p, _ in work}, lambda: self._step(work)
        )
        return loss

    def _step(self, work: list[tuple[dict, torch.Tensor, str]]) -> None:
        """Update every ``(group, param, name)`` in ``work`` (its gradients checked): share, bucket, update."""
        rank = world()[0]
        params = [p for _, p, _ in work]
        # FSDP2: the owner of each sharded parameter gathers it and its gradient (one exchange for all of
        # them, the same lists on every rank), updates the whole matrix, and scatters the rows back after.
        owners, fulls = gather_owned(self, params, [p for g in self.param_groups for p in g["params"]], True)
        # Same-shape matrices (blocks, under ``split``) of a group are updated together, so subclasses can batch.
        buckets: dict[tuple, tuple[dict, list, list, list]] = {}
        updated = []
        for group, p, _ in work:
            if owners.get(id(p), rank) != rank:
                continue
            if id(p) in fulls:
                shape = matrix_shape(p) if self.matrix_only else tuple(p.shape)
                W_full, G_full = fulls[id(p)]
                W, G, writeback = W_full.view(shape), cast(torch.Tensor, G_full).reshape(shape), (lambda: None)
            else:
                W, writeback = self._as_update_view(p)
                G = cast(torch.Tensor, p.grad).reshape(W.shape)
            updated.append((p, writeback))
            for Wb, Gb, state in zip(split_blocks(W, group), split_blocks(G, group), self._block_states(p, group)):
                key = (id(group), tuple(Wb.shape), Wb.dtype, str(Wb.device))
                bucket = buckets.setdefault(key, (group, [], [], []))
                bucket[1].append(Wb)
                bucket[2].append(Gb)
                bucket[3].append(state)
        self._update_buckets([(Ws, Gs, states, group) for group, Ws, Gs, states in buckets.values()])
        for p, writeback in updated:
            writeback()
            state = self.state[p]
            if "blocks" in state:
                state["msign_calls"] = sum(b.get("msign_calls", 0) for b in state["blocks"].values())
            state["step"] = state.get("step", 0) + 1
            self.local_matrices += 1
            self.local_msign_calls += state.get("msign_calls", 0)
        return_owned(params, owners, fulls)

    def _block_states(self, p: torch.Tensor, group: dict) -> list[dict]:
        """The state of each block of ``p``: its own state, or under ``split=k`` the k dicts of
        ``state["blocks"]`` (keyed 0..k-1, so checkpoints keep their tensors as tensors)."""
        k = group.get("split", 1)
        if k == 1:
            return [self.state[p]]
        blocks = self.state[p].setdefault("blocks", {})
        return [blocks.setdefault(j, {}) for j in range(k)]

    def _update_buckets(self, buckets: list[tuple[list, list, list, dict]]) -> None:
        """Update every bucket ``(Ws, Gs, states, group)`` of same-shape matrices; by default in turn."""
        for bucket in buckets:
            self._update_many(*bucket)

    def _update_many(self, Ws: list[torch.Tensor], Gs: list[torch.Tensor], states: list[dict], group: dict) -> None:
        """Update several same-shape parameters of one group; by default one at a time."""
        for W, G, state in zip(Ws, Gs, states):
            self._update(W, G, state, group)

    def _update(self, W: torch.Tensor, G: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers for subclasses
    @staticmethod
    def _momentum(G: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
        """``B ← μB + (1−μ)G``; returns ``(1−μ)G + μB`` with Nesterov, else B (G when μ = 0)."""
        mu = group["momentum"]
        if mu == 0:
            return G
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = torch.zeros_like(G, memory_format=torch.contiguous_format)
        buf = state["momentum_buffer"] = buf.lerp(G, 1 - mu)  # a new tensor: see replaces_state_tensors
        return G.lerp(buf, mu) if group["nesterov"] else buf

    @staticmethod
    def _msign_fn(group: dict) -> Callable[[torch.Tensor], torch.Tensor]:
        return partial(msign, method=group["msign_method"], steps=group["msign_steps"], dtype=group["msign_dtype"])

    # ---------------------------------------------------------------- state and diagnostics
    def diagnostics(self) -> dict[str, dict[str, Any]]:
        """Per-parameter numbers from the last step (steps taken, msign calls, solver residual...)."""
        out: dict[str, dict[str, Any]] = {}
        for gi, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                state = self.state.get(p, {})
                row = {k: state[k] for k in self.diagnostic_keys if k in state}
                out[param_name(group, i, gi).strip("'")] = _with_blocks(row, state.get("blocks"), self.diagnostic_keys)
        return out

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["modman"] = self._modman_entry()
        return sd

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        fill_group_defaults(self)

    def _state_shape(self, p: torch.Tensor, key: str) -> tuple[int, ...] | None:
        """The shape a state tensor ``key`` of ``p`` must have (None: not checked)."""
        shape = matrix_shape(p) if self.matrix_only else tuple(p.shape)
        return {"momentum_buffer": tuple(shape), "multiplier": (min(shape),) * 2}.get(key)

    def validate_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Raise ValueError unless ``state_dict`` was saved by this kind of optimizer for these parameters."""
        return check_state_dict(self, state_dict, self._state_shape)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        extra = self.validate_state_dict(state_dict)
        state_dict = {k: v for k, v in state_dict.items() if k != "modman"}
        super().load_state_dict(state_dict)
        self._restore_modman_entry(extra)


def _with_blocks(row: dict[str, Any], blocks: dict | None, keys: tuple[str, ...]) -> dict[str, Any]:
    """A split matrix's diagnostics: msign calls summed over its blocks, iterations, residuals and gaps the
    largest, the solvers named once each."""
    if not blocks:
        return row
    for key in keys:
        values = [b[key] for b in blocks.values() if key in b]
        if not values or key in ("step", "msign_calls"):
            continue
        row[key] = "+".join(dict.fromkeys(map(str, values))) if key == "solver" else max(values)
    return row
