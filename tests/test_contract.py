"""The optimizer contract (docs/contract.md), as one table run over every optimizer modman ships.

Each row builds a model and an optimizer for it; each test is one promise of the contract:
state dicts continue bit for bit (also into an optimizer rebuilt over the loaded weights), closures and lr
schedulers work as in torch.optim, a NaN/Inf gradient or update changes nothing and names the parameter,
a zero gradient leaves the weights bit for bit, empty and complex tensors and foreign state dicts are refused
or ignored as documented.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modman.experiments.llm.model import PRESETS, Transformer
from modman.modular import MLP, ModularDescent
from modman.optim import (
    SPEL,
    Hyperball,
    HypersphericalDescent,
    ManifoldMuon,
    ModularOptimizer,
    Muon,
    SpectralDescent,
    SpectralRetraction,
    SpectralSphere,
    StiefelRetraction,
)
from modman.optim.guard import NonFiniteError


def torch_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(12, 24, bias=False), nn.ReLU(), nn.Linear(24, 24, bias=False), nn.ReLU(), nn.Linear(24, 5, bias=False)
    )


def transformer(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Transformer(PRESETS["tiny"])


def modular_mlp(seed: int = 0) -> nn.Module:
    return MLP((12, 24, 24, 5), seed=seed)


def mlp_batches(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(12, 5, generator=g)
    out = []
    for _ in range(n):
        x = torch.randn(32, 12, generator=g)
        out.append((x, (x @ teacher).argmax(1)))
    return out


def token_batches(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(x[:, :-1], x[:, 1:]) for x in (torch.randint(0, 256, (4, 17), generator=g) for _ in range(n))]


@dataclass
class Case:
    model: Callable[[int], nn.Module]
    optimizer: Callable[..., torch.optim.Optimizer]
    batches: Callable[[int], list]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x).flatten(0, -2), y.flatten())


CASES = {
    "Muon": Case(torch_mlp, lambda m, **kw: Muon(m.named_parameters(), lr=0.02, **kw), mlp_batches),
    "Muon+decay": Case(
        torch_mlp, lambda m, **kw: Muon(m.named_parameters(), lr=0.02, weight_decay=0.1, **kw), mlp_batches
    ),
    "SpectralDescent": Case(
        torch_mlp, lambda m, **kw: SpectralDescent(m.named_parameters(), lr=0.05, **kw), mlp_batches
    ),
    "HypersphericalDescent": Case(
        torch_mlp,
        lambda m, **kw: HypersphericalDescent(m.named_parameters(), lr=0.1, radius=3.0, momentum=0.5, **kw),
        mlp_batches,
    ),
    "ManifoldMuon": Case(torch_mlp, lambda m, **kw: ManifoldMuon(m.named_parameters(), lr=0.1, **kw), mlp_batches),
    "ManifoldMuon(certified)": Case(
        torch_mlp,
        lambda m, **kw: ManifoldMuon(m.named_parameters(), lr=0.1, steps=20, solver="certified", **kw),
        mlp_batches,
    ),
    "Hyperball": Case(torch_mlp, lambda m, **kw: Hyperball(m.named_parameters(), lr=0.05, **kw), mlp_batches),
    "SPEL": Case(torch_mlp, lambda m, **kw: SPEL(m.named_parameters(), lr=0.05, **kw), mlp_batches),
    "SpectralSphere": Case(torch_mlp, lambda m, **kw: SpectralSphere(m.named_parameters(), lr=0.05, **kw), mlp_batches),
    "SpectralSphere(SSO)": Case(
        torch_mlp, lambda m, **kw: SpectralSphere(m.named_parameters(), lr=0.05, tangent=True, **kw), mlp_batches
    ),
    "StiefelRetraction": Case(
        torch_mlp,
        lambda m, **kw: StiefelRetraction(torch.optim.AdamW(m.named_parameters(), lr=1e-2, weight_decay=0.0), **kw),
        mlp_batches,
    ),
    "SpectralRetraction": Case(
        torch_mlp,
        lambda m, **kw: SpectralRetraction(torch.optim.AdamW(m.named_parameters(), lr=1e-2, weight_decay=0.0), **kw),
        mlp_batches,
    ),
    "ModularOptimizer(manifold_muon)": Case(
        transformer, lambda m, **kw: ModularOptimizer(m, "manifold_muon", weight_decay=0.0, **kw), token_batches
    ),
    "ModularOptimizer(stiefel_all)": Case(
        transformer, lambda m, **kw: ModularOptimizer(m, "stiefel_all", weight_decay=0.0, **kw), token_batches
    ),
    "ModularDescent": Case(modular_mlp, lambda m, **kw: ModularDescent(m, lr=0.2, **kw), mlp_batches),
}
DECAYS = {"Muon+decay"}  # decoupled weight decay shrinks W even where the gradient is zero


def train(case: Case, model, opt, data) -> None:
    for batch in data:
        opt.zero_grad()
        case.loss(model, batch).backward()
        opt.step()


def after_one_step_with_new_gradients(case: Case):
    """A model and its optimizer after one step, the next gradients in place, and copies of the weights and
    optimizer state at that point."""
    model = case.model(0)
    opt = case.optimizer(model)
    train(case, model, opt, case.batches(1))
    before, state_before = weights(model), state_tensors(opt)
    opt.zero_grad()
    case.loss(model, case.batches(2)[1]).backward()
    return model, opt, before, state_before


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def state_tensors(opt) -> list[torch.Tensor]:
    sd = opt.state_dict()
    out = []

    def walk(node):
        if isinstance(node, torch.Tensor):
            out.append(node.clone())
        elif isinstance(node, dict):
            for k in sorted(node, key=str):
                walk(node[k])
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)

    walk(sd)
    return out


@pytest.mark.parametrize("name", CASES)
def test_state_dict_continues_bit_for_bit_in_an_optimizer_rebuilt_over_the_loaded_weights(name):
    """Save model and optimizer, rebuild both (the optimizer over the loaded weights, as a resumed run does),
    continue: the same weights as the run that never stopped. Rebuilding must not re-project weights that
    are already on their manifold."""
    case = CASES[name]
    data = case.batches(6)
    model = case.model(0)
    opt = case.optimizer(model)
    train(case, model, opt, data[:3])
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train(case, model, opt, data[3:])

    model2 = case.model(123)
    model2.load_state_dict(saved_model)
    loaded = weights(model2)
    opt2 = case.optimizer(model2)
    assert same(loaded, weights(model2)), "building the optimizer changed weights already on their manifolds"
    opt2.load_state_dict(saved_opt)
    train(case, model2, opt2, data[3:])
    assert same(weights(model), weights(model2))


@pytest.mark.parametrize("name", CASES)
def test_closure_is_evaluated_with_grad_and_its_loss_returned(name):
    case = CASES[name]
    model = case.model(0)
    opt = case.optimizer(model)
    batch = case.batches(1)[0]

    def closure():
        opt.zero_grad()
        loss = case.loss(model, batch)
        loss.backward()
        return loss

    before = weights(model)
    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad
    assert not same(before, weights(model))


@pytest.mark.parametrize("name", CASES)
def test_lr_scheduler_scales_every_group_and_the_steps_follow(name):
    case = CASES[name]
    model = case.model(0)
    opt = case.optimizer(model)
    initial = [g["lr"] for g in opt.param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    for _ in range(2):
        train(case, model, opt, case.batches(1))
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.25 * lr for lr in initial])
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradient_changes_nothing_and_names_the_parameter(name, bad):
    case = CASES[name]
    model, opt, before, state_before = after_one_step_with_new_gradients(case)
    names = [n for n, p in model.named_parameters()]
    last = list(model.parameters())[-1]
    last.grad.view(-1)[0] = bad
    with pytest.raises(NonFiniteError, match="non-finite gradient") as info:
        opt.step()
    assert any(names[-1] in n for n in info.value.names), (names[-1], info.value.names)
    assert same(before, weights(model)) and same(state_before, state_tensors(opt))
    skipping = case.optimizer(model, skip_nonfinite=True)
    skipping.step()
    assert skipping.nonfinite_skips == 1 and same(before, weights(model))


# Where each optimizer's new values come from: made to return NaN, the step must undo itself.
POISON = {
    "Muon": ["modman.optim.muon.muon_direction"],
    "Muon+decay": ["modman.optim.muon.muon_direction"],
    "SpectralDescent": ["modman.optim.muon.muon_direction"],
    "HypersphericalDescent": ["modman.optim.hyperspherical.hyperspherical_direction"],
    "ManifoldMuon": [
        "modman.optim.manifold_muon.manifold_muon_direction",
        "modman.optim.manifold_muon.closed_form_batch",
    ],
    "ManifoldMuon(certified)": [
        "modman.optim.manifold_muon.manifold_muon_direction",
        "modman.optim.manifold_muon.closed_form_batch",
    ],
    "Hyperball": ["modman.optim.constrained.muon_direction"],
    "SPEL": ["modman.optim.constrained.muon_direction", "modman.manifolds.stiefel.Stiefel.retract_step"],
    "SpectralSphere": ["modman.optim.constrained.muon_direction", "modman.optim.constrained.lanczos_top"],
    "SpectralSphere(SSO)": ["modman.optim.constrained.sso_direction", "modman.optim.constrained.top_eigenpair"],
    "StiefelRetraction": ["modman.manifolds.stiefel.Stiefel.retract"],
    "SpectralRetraction": ["modman.manifolds.spectral_ball.SpectralBall.retract"],
    "ModularOptimizer(manifold_muon)": [
        "modman.optim.manifold_muon.manifold_muon_direction",
        "modman.optim.manifold_muon.closed_form_batch",
    ],
    "ModularOptimizer(stiefel_all)": ["modman.manifolds.stiefel.Stiefel.retract"],
    "ModularDescent": ["modman.modular.atoms.Linear.retract_step"],
}


def _nan_first(result):
    if isinstance(result, tuple):
        return (_nan_first(result[0]),) + result[1:]
    out = result.clone()
    out[(0,) * out.ndim] = float("nan")
    return out


@pytest.mark.parametrize("name", CASES)
def test_a_nonfinite_update_restores_every_weight_and_state_and_names_the_parameter(name, monkeypatch):
    """Whatever computes the update (msign, a solver, a retraction), a NaN coming out of it is caught after the
    step: every weight and every state tensor is put back, and the error names the parameter."""
    import importlib

    case = CASES[name]
    model, opt, before, state_before = after_one_step_with_new_gradients(case)
    for target in POISON[name]:
        module, _, attr = target.rpartition(".")
        try:
            owner = importlib.import_module(module)
        except ModuleNotFoundError:  # a class attribute: module.Class.method
            module, _, cls = module.rpartition(".")
            owner = getattr(importlib.import_module(module), cls)
        real = getattr(owner, attr)
        monkeypatch.setattr(owner, attr, lambda *a, _real=real, **k: _nan_first(_real(*a, **k)))
    with pytest.raises(NonFiniteError, match="came out non-finite") as info:
        opt.step()
    monkeypatch.undo()
    names = {n for n, _ in model.named_parameters()}
    assert info.value.names and all(any(n in bad for n in names) for bad in info.value.names), info.value.names
    assert same(before, weights(model)) and same(state_before, state_tensors(opt))
    train(case, model, opt, case.batches(1))  # and the optimizer still works
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", CASES)
def test_zero_gradient_leaves_weights_bit_for_bit_unless_decoupled_decay(name):
    case = CASES[name]
    model = case.model(0)
    opt = case.optimizer(model)
    before = weights(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert same(before, weights(model)) != (name in DECAYS)


@pytest.mark.parametrize("name", CASES)
def test_state_dict_of_another_optimizer_or_model_is_refused_before_any_change(name):
    case = CASES[name]
    model = case.model(0)
    opt = case.optimizer(model)
    train(case, model, opt, case.batches(1))
    mine, state_before = copy.deepcopy(opt.state_dict()), state_tensors(opt)
    others = {
        "Muon": lambda: Muon(torch_mlp(1).named_parameters()),
        "AdamW": lambda: torch.optim.AdamW(torch_mlp(1).parameters()),
    }
    for kind, build in others.items():
        if name.startswith(kind) or (kind == "AdamW" and "Retraction" in name):
            continue
        other = build()
        other.zero_grad()
        for p in other.param_groups[0]["params"]:
            p.grad = torch.randn_like(p)
        other.step()
        with pytest.raises(ValueError, match="load_state_dict|saved by|was not saved"):
            opt.load_state_dict(other.state_dict())
        assert same(state_tensors(opt), state_before)
    # the same kind of optimizer, but for a model of other shapes
    wider = {
        "torch_mlp": lambda: nn.Sequential(
            nn.Linear(12, 20, bias=False),
            nn.ReLU(),
            nn.Linear(20, 24, bias=False),
            nn.ReLU(),
            nn.Linear(24, 5, bias=False),
        ),
        "modular_mlp": lambda: MLP((12, 20, 24, 5)),
        "transformer": None,
    }[case.model.__name__]
    if wider is not None:
        other_model = wider()
        other = case.optimizer(other_model)
        train(case, other_model, other, case.batches(1))
        with pytest.raises(ValueError, match="shape|another model|parameters"):
            opt.load_state_dict(other.state_dict())
        assert same(state_tensors(opt), state_before)
    opt.load_state_dict(mine)  # its own state still loads


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n].model is torch_mlp])
def test_empty_matrices_are_left_alone_and_complex_ones_refused(name):
    case = CASES[name]
    with warnings.catch_warnings():  # torch: "Initializing zero-element tensors is a no-op"
        warnings.simplefilter("ignore", UserWarning)
        model = nn.Sequential(nn.Linear(12, 0, bias=False), nn.Linear(0, 5, bias=False), nn.Linear(5, 6, bias=False))
    opt = case.optimizer(model)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    assert model[0].weight.shape == (0, 12) and model[1].weight.shape == (5, 0)
    complex_model = nn.Sequential(nn.Linear(4, 3, bias=False, dtype=torch.complex64))
    with pytest.raises(TypeError, match="complex"):
        case.optimizer(complex_model)
