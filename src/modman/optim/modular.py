"""The LLM experiment plan's modular optimizer: a different optimizer per parameter role, behind one torch.optim
interface."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from ..errors import UserError
from ..rules import SOLVER_NAMES
from .base import guard_gradients, run_closure
from .constrained import SPEL, Hyperball, SpectralSphere
from .guard import step_atomically
from .manifold_muon import ManifoldMuon
from .muon import Muon
from .retraction import SpectralRetraction, StiefelRetraction
from .roles import ROLES, classify_parameters, fused_projections, transposed_weights
from .shell import OptimizerShell
from .state import check_state_dict, moment_shape

__all__ = [
    "ModularOptimizer",
    "EXPERIMENTS",
    "RULES",
    "MATRIX_ROLES",
    "DEFAULT_LR",
    "rule_assignment",
    "unreached_roles",
]

RULES = ("adamw", "muon", "stiefel", "spectral", "manifold_muon", "hyperball", "spel", "spectral_sphere")
MATRIX_ROLES = ("attention", "ffn")

# The LLM experiment plan, section 4: the rule of the attention and FFN matrices per experiment. Embeddings, head,
# norms, anything else and every vector (gains, biases) get AdamW in every experiment.
EXPERIMENTS: dict[str, dict[str, str]] = {
    "baseline": {"attention": "adamw", "ffn": "adamw"},
    "muon_all": {"attention": "muon", "ffn": "muon"},
    "muon_attention": {"attention": "muon", "ffn": "adamw"},
    "muon_ffn": {"attention": "adamw", "ffn": "muon"},
    "stiefel_all": {"attention": "stiefel", "ffn": "stiefel"},
    "stiefel_attention": {"attention": "stiefel", "ffn": "adamw"},
    "stiefel_ffn": {"attention": "adamw", "ffn": "stiefel"},
    "spectral_all": {"attention": "spectral", "ffn": "spectral"},
    "manifold_muon": {"attention": "manifold_muon", "ffn": "manifold_muon"},
    # The constrained-Muon family: Muon's direction, then a cheap step back onto a constraint set.
    "spectral_sphere": {"attention": "spectral_sphere", "ffn": "spectral_sphere"},
    "hyperball": {"attention": "hyperball", "ffn": "hyperball"},
    "spel": {"attention": "spel", "ffn": "spel"},
}

# Learning rate of each rule unless ``lr`` / ``role_lr`` say otherwise: the best of a grid on the
# ``small`` preset (BENCHMARKS.md / README; the constrained-Muon family: docs/results/constrained). Muon-type lr
# is the spectral norm of an update (spectral_sphere: relative to R; hyperball: the Frobenius step relative to
# ‖W‖_F); AdamW-type (adamw, stiefel = AdamW + Stiefel retraction, spectral = AdamW + clip) is per coordinate.
DEFAULT_LR = {
    "adamw": 3e-3,
    "muon": 0.02,
    "stiefel": 3e-3,
    "spectral": 3e-3,
    "manifold_muon": 0.05,
    "spectral_sphere": 0.02,
    "hyperball": 0.025,
    "spel": 0.05,
}


# Training needs the manifold Muon direction to a relative duality gap of 1e-4 (the update is within 0.01 %
# of the steepest one), not 1e-6: along a real trajectory the fixed point certifies 1e-6 only after 20-100
# iterations for the FFN matrices (aspect 4), which made a step ~10x slower. Unconverged directions are
# repaired onto the tangent space, so the weights stay on the manifold either way.
MANIFOLD_MUON_TOL = 1e-4
MANIFOLD_MUON_STEPS = 30


def rule_assignment(roles: dict[str, str], experiment: str, shapes: dict[str, torch.Size]) -> dict[str, str]:
    """``{parameter name: rule}``: the experiment's rule for attention/FFN matrices, AdamW for the rest."""
    if experiment not in EXPERIMENTS:
        raise UserError(f"unknown experiment {experiment!r}; choose one of: {', '.join(EXPERIMENTS)}")
    table = EXPERIMENTS[experiment]
    return {name: table.get(role, "adamw") if len(shapes[name]) >= 2 else "adamw" for name, role in roles.items()}


def unreached_roles(roles: dict[str, str], experiment: str, shapes: dict[str, torch.Size]) -> list[str]:
    """One line per role the experiment gives a rule other than AdamW but that holds no matrix in this model (the
    experiment would then train it as ``baseline`` there without saying so)."""
    out = []
    for role in MATRIX_ROLES:
        rule = EXPERIMENTS[experiment].get(role, "adamw")
        if rule != "adamw" and not any(r == role and len(shapes[n]) >= 2 for n, r in roles.items()):
            out.append(
                f"experiment {experiment!r} puts {role} matrices on {rule}, but this model has no {role} "
                f"matrix by modman.optim.classify_parameters (see `modman roles`); pass roles={{name: role}} "
                "to say which parameters are"
            )
    return out


class ModularOptimizer(OptimizerShell, Optimizer):
    r"""One optimizer per rule, each over the parameters the experiment gives it; steps them all together.

    ``EXPERIMENTS[experiment]`` says which rule the attention and FFN matrices follow (AdamW, Muon,
    AdamW + Stiefel retraction, AdamW + spectral clip, manifold Muon, SpectralSphere, Hyperball, SPEL); embeddings,
    head, norms and vectors
    follow AdamW. Roles come from ``classify_parameters(model)`` (or ``roles``). ``param_groups`` is the
    list of every sub-optimizer's groups (each tagged with ``role`` and ``rule``), so lr schedulers act
    on all of them; ``state_dict`` holds every sub-optimizer's state.

    Args:
        model: the network; its ``named_parameters()`` are optimized.
        experiment: a key of ``EXPERIMENTS``.
        lr: learning rate of the attention and FFN matrices (default: ``DEFAULT_LR`` of their rule).
        adamw_lr: learning rate of embeddings, head, norms and other parameters.
        role_lr: ``{role: lr}`` overrides, highest precedence.
        weight_decay: decoupled decay of unconstrained matrices (AdamW, Muon); vectors and matrices on a
            manifold (Stiefel, spectral ball) get none — the constraint already bounds them.
        betas: AdamW's betas. momentum: Muon's and manifold Muon's (Nesterov).
        roles: ``{name: role}`` to use instead of ``classify_parameters(model)``.
        solver: manifold Muon's solver for the matrices under the ``manifold_muon`` rule (``"auto"``: closed form
            for square, ``tracking`` otherwise, one msign per step; ``"certified"``: closed form for square,
            ``hybrid`` to ``MANIFOLD_MUON_TOL`` otherwise; any name of ``modman.rules.SOLVER_NAMES``).
        split_fused: step each fused q, k, v projection (``fused_projections(model)``: GPT-2's ``c_attn``,
            ``nn.MultiheadAttention``'s ``in_proj_weight``, a ``qkv`` Linear) as three matrices under every matrix
            rule (param group option ``split=3``); False treats it as one matrix.
        skip_nonfinite: skip (and count) a step with NaN/Inf gradients instead of raising ValueError.
    """

    EXPERIMENTS = EXPERIMENTS  # experiment name -> {role: rule}; the names ``experiment`` takes

    def __init__(
        self,
        model: nn.Module,
        experiment: str = "baseline",
        lr: float | None = None,
        *,
        adamw_lr: float = DEFAULT_LR["adamw"],
        role_lr: dict[str, float] | None = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        momentum: float = 0.95,
        roles: dict[str, str] | None = None,
        skip_nonfinite: bool = False,
        solver: str = "auto",
        split_fused: bool = True,
    ):
        named = dict(model.named_parameters())
        self.roles = dict(roles) if roles is not None else classify_parameters(model)
        missing = [n for n in named if self.roles.get(n) not in ROLES]
        if missing:
            raise UserError(
                f"ModularOptimizer: roles gives no valid role for {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}; every parameter needs one of {', '.join(ROLES)}"
            )
        self._check_arguments(named, lr, adamw_lr, role_lr or {}, weight_decay)
        self.experiment = experiment
        self.assignment = rule_assignment(self.roles, experiment, {n: p.shape for n, p in named.items()})
        for line in unreached_roles(self.roles, experiment, {n: p.shape for n, p in named.items()}):
            warnings.warn(f"ModularOptimizer: {line}", stacklevel=2)
        self._init_shell(skip_nonfinite)
        groups = self._param_groups(model, named, lr, adamw_lr, role_lr or {}, weight_decay, split_fused)
        if solver not in SOLVER_NAMES:
            raise UserError(f"ModularOptimizer: unknown solver {solver!r}; choose one of {', '.join(SOLVER_NAMES)}")
        self.optimizers: dict[str, Any] = {  # torch.optim.Optimizers; modman's add share_work, diagnostics...
            rule: (
                _manifold_muon(g, momentum, solver) if rule == "manifold_muon" else _BUILDERS[rule](g, betas, momentum)
            )
            for rule, g in groups.items()
        }
        for opt in self.optimizers.values():
            opt.atomic = False  # this optimizer's step is the atomic one (step_atomically)
        super().__init__([p for p in named.values()], {})
        self.param_groups = [g for opt in self.optimizers.values() for g in opt.param_groups]
        self._names = {id(p): n for n, p in named.items()}

    def _param_groups(self, model, named, lr, adamw_lr, role_lr, weight_decay, split_fused) -> dict[str, list[dict]]:
        """``{rule: [param group]}``: one group per (rule, role, decays, transposed, split), params in model order."""
        # (rule, role, decays, transposed) -> [(name, param)] in model order; a bucket holds only matrices or only
        # vectors, and only weights stored (out, in) or only ones stored (in, out) (HF Conv1D).
        # Fused q, k, v projections are stepped per block by every matrix rule (``fused_projections``).
        stored_in_out, fused = transposed_weights(model), fused_projections(model) if split_fused else {}
        buckets: dict[tuple[str, str, bool, bool, int], list[tuple[str, nn.Parameter]]] = {}
        for name, p in named.items():
            rule, role = self.assignment[name], self.roles[name]
            decays = p.ndim >= 2 and rule in ("adamw", "muon")
            transposed = name in stored_in_out and rule != "adamw"
            split = fused.get(name, 1) if rule != "adamw" else 1
            buckets.setdefault((rule, role, decays, transposed, split), []).append((name, p))
        groups: dict[str, list[dict]] = {}
        for (rule, role, decays, transposed, split), params in buckets.items():
            if role_lr and role in role_lr:
                lr_here = role_lr[role]
            elif role in MATRIX_ROLES and params[0][1].ndim >= 2:
                lr_here = lr if lr is not None else DEFAULT_LR[rule]
            else:
                lr_here = adamw_lr
            groups.setdefault(rule, []).append(
                {
                    "params": params,
                    "lr": lr_here,
                    "role": role,
                    "rule": rule,
                    "weight_decay": weight_decay if decays else 0.0,
                    **({"transposed": True} if transposed else {}),
                    **({"split": split} if split > 1 else {}),
                }
            )
        return groups

    @staticmethod
    def _check_arguments(named, lr, adamw_lr, role_lr, weight_decay) -> None:
        for key, value in [("lr", lr), ("adamw_lr", adamw_lr), ("weight_decay", weight_decay)] + [
            (f"role_lr[{r!r}]", v) for r, v in role_lr.items()
        ]:
            if value is not None and not (
                isinstance(value, (int, float)) and value >= 0 and value == value and value != float("inf")
            ):
                raise UserError(f"ModularOptimizer: invalid {key}={value!r}; it must be a finite number >= 0")
        unknown = [r for r in role_lr if r not in ROLES]
        if unknown:
            raise UserError(f"ModularOptimizer: role_lr has unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
        if not named:
            raise UserError("ModularOptimizer: the model has no parameters")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """Check every gradient (nothing changes when one is NaN/Inf), then step each sub-optimizer."""
        loss = run_closure(closure)
        named = [(self._names[id(p)], p.grad) for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not guard_gradients(self, named):
            return loss
        params = [(self._names[id(p)], p) for g in self.param_groups for p in g["params"] if p.grad is not None]
        owners = {id(p): opt for opt in self.optimizers.values() for g in opt.param_groups for p in g["params"]}
        step_atomically(self, params, owners, self._step_all)
        return loss

    def _step_all(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    # ---- data parallel --------------------------------------------------------------------------------
    def _sharing(self) -> list[OptimizerShell]:
        """The sub-optimizers whose matrices are updated by one owner rank (all but AdamW's elementwise steps)."""
        return [opt for rule, opt in self.optimizers.items() if rule != "adamw"]

    def _work_matrices(self) -> list[torch.Tensor]:
        return [p for opt in self._sharing() for p in opt._work_matrices()]

    def _set_owners(self, owners: dict[int, int] | None) -> None:
        """Owners keep their matrices' momentum / multiplier state; AdamW's steps run on every rank."""
        for opt in self._sharing():
            opt.share_work(owners)
        self._owners = owners

    @property
    def local_work(self) -> dict[str, int]:
        opts = self._sharing()
        return {"matrices": sum(o.local_matrices for o in opts), "msign_calls": sum(o.local_msign_calls for o in opts)}

    def diagnostics(self) -> dict[str, dict[str, Any]]:
        """Per-parameter numbers of the last step from the sub-optimizers that keep them (msign calls, ...)."""
        out: dict[str, dict[str, Any]] = {}
        for opt in self.optimizers.values():
            if hasattr(opt, "diagnostics"):
                out.update(opt.diagnostics())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "assignment": dict(self.assignment),
            "optimizers": {rule: opt.state_dict() for rule, opt in self.optimizers.items()},
            "modman": self._modman_entry(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or "optimizers" not in state_dict:
            raise UserError(
                "ModularOptimizer.load_state_dict: this state dict was not saved by a ModularOptimizer "
                "(it has no 'optimizers' entry); load it into the kind of optimizer that saved it"
            )
        if state_dict.get("assignment") != self.assignment:
            raise UserError(
                f"ModularOptimizer: this state was saved for experiment "
                f"{state_dict.get('experiment')!r} with another parameter assignment; build the "
                "optimizer for the same model and experiment before loading it"
            )
        saved = state_dict["optimizers"]
        for rule, opt in self.optimizers.items():  # every part is checked before any is loaded
            if hasattr(opt, "validate_state_dict"):
                opt.validate_state_dict(saved[rule])
            else:
                check_state_dict(opt, saved[rule], moment_shape, modman=False)
        for rule, opt in self.optimizers.items():
            opt.load_state_dict(saved[rule])
        self.param_groups = [g for opt in self.optimizers.values() for g in opt.param_groups]
        self._restore_modman_entry(state_dict.get("modman", {}))


def _adamw(groups, betas, momentum):
    return torch.optim.AdamW(groups, betas=betas)


_BUILDERS: dict[str, Callable[[list[dict], tuple, float], Optimizer]] = {
    "adamw": _adamw,
    "muon": lambda g, betas, momentum: Muon(g, momentum=momentum),
    "stiefel": lambda g, betas, momentum: StiefelRetraction(_adamw(g, betas, momentum)),
    "spectral": lambda g, betas, momentum: SpectralRetraction(_adamw(g, betas, momentum)),
    "manifold_muon": lambda g, betas, momentum: _manifold_muon(g, momentum, "auto"),
    "spectral_sphere": lambda g, betas, momentum: SpectralSphere(g, momentum=momentum),
    "hyperball": lambda g, betas, momentum: Hyperball(g, momentum=momentum),
    "spel": lambda g, betas, momentum: SPEL(g, momentum=momentum),
}


def training_steps(solver: str) -> int | None:
    """Training's iteration cap: ``MANIFOLD_MUON_STEPS`` for the certified solvers (to ``MANIFOLD_MUON_TOL``),
    None (the solver's own: one iteration, one msign) for ``tracking``, which ``auto`` gives non-square matrices."""
    return None if solver in ("auto", "tracking") else MANIFOLD_MUON_STEPS


def _manifold_muon(groups, momentum: float, solver: str) -> ManifoldMuon:
    """Training's manifold Muon (``training_steps``)."""
    steps = training_steps(solver)
    return ManifoldMuon(groups, momentum=momentum, nesterov=True, tol=MANIFOLD_MUON_TOL, steps=steps, solver=solver)
