"""Hostile but legal input: gradients from 1e-30 to 1e30, empty matrices, integer and complex tensors, radial
gradients on a sphere. A finite gradient gives a finite step whose direction does not depend on its scale."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from modman import msign
from modman.manifolds import SpectralBall, Sphere, Stiefel
from modman.modular import MLP, ModularDescent
from modman.msign import METHODS
from modman.optim import (
    HypersphericalDescent,
    ManifoldMuon,
    ModularOptimizer,
    Muon,
    SpectralDescent,
    SpectralRetraction,
    StiefelRetraction,
)

shapes = st.tuples(st.integers(0, 12), st.integers(0, 12))
powers = st.integers(-100, 100)  # 2^±100 ≈ 1e±30
decades = st.integers(-30, 30)


def gaussian(shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------------------------ msign
@given(
    shape=shapes,
    k=powers,
    method=st.sampled_from(METHODS),
    dtype=st.sampled_from([None, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_msign_is_finite_and_exactly_invariant_to_power_of_two_scales(shape, k, method, dtype, seed):
    G = gaussian(shape, seed)
    A = msign(G, method=method, dtype=dtype if method != "exact" else None)
    scaled = msign(G * 2.0**k, method=method, dtype=dtype if method != "exact" else None)
    assert A.shape == G.shape and torch.isfinite(scaled).all()
    if method == "exact":  # float64 SVD: the same to rounding, not to the bit
        assert torch.allclose(scaled, A, atol=1e-6)
    else:  # only exponents change: bit for bit
        assert torch.equal(scaled, A)


@given(
    shape=shapes.filter(lambda s: min(s) > 0),
    decade=decades,
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 2**16),
)
def test_msign_of_any_finite_scale_is_a_finite_contraction(shape, decade, method, seed):
    G = gaussian(shape, seed) * 10.0**decade
    A = msign(G, method=method)
    assert torch.isfinite(A).all()
    # Muon's quintic leaves singular values in about [0.7, 1.2]; the others converge to 1.
    assert torch.linalg.matrix_norm(A.double(), ord=2) <= (1.25 if method == "newton_schulz" else 1.01)
    assert (G.double() * A.double()).sum() >= 0  # still the gradient's own direction


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_msign_refuses_integer_and_complex_tensors(dtype):
    with pytest.raises(TypeError, match="floating-point"):
        msign(torch.ones(3, 2, dtype=dtype))


# ------------------------------------------------------------------------------------------------ optimizers
# The optimizers whose step direction is invariant to the gradient's scale: one step at G·2^k from the same
# start moves the weights exactly as at G. (AdamW's ε makes it scale-dependent; the wrappers are checked below.)
SCALE_FREE = {
    "Muon": lambda ps: Muon(ps, lr=0.02, momentum=0.9),
    "SpectralDescent": lambda ps: SpectralDescent(ps, lr=0.05, radius=2.0),
    "HypersphericalDescent": lambda ps: HypersphericalDescent(ps, lr=0.1, radius=3.0),
    "HypersphericalDescent(rows)": lambda ps: HypersphericalDescent(ps, lr=0.1, dim=-1),
    "ManifoldMuon": lambda ps: ManifoldMuon(ps, lr=0.1),
    "ManifoldMuon(fixed_point)": lambda ps: ManifoldMuon(ps, lr=0.1, solver="fixed_point", tol=1e-5),
    "ManifoldMuon(newton)": lambda ps: ManifoldMuon(ps, lr=0.1, solver="newton", tol=1e-5),
}
MANIFOLD = {
    "SpectralDescent": SpectralBall(2.0),
    "HypersphericalDescent": Sphere(3.0),
    "HypersphericalDescent(rows)": Sphere(1.0, dim=-1),
    "ManifoldMuon": Stiefel(),
    "ManifoldMuon(fixed_point)": Stiefel(),
    "ManifoldMuon(newton)": Stiefel(),
}


def one_step(build, W0, grads):
    W = nn.Parameter(W0.clone())
    opt = build([W])
    for G in grads:
        W.grad = G.clone()
        opt.step()
    return W.detach()


@pytest.mark.slow
@pytest.mark.parametrize("name", SCALE_FREE)
@given(rows=st.integers(1, 10), cols=st.integers(1, 10), k=powers, warm=st.booleans(), seed=st.integers(0, 999))
def test_step_is_finite_on_the_manifold_and_exactly_scale_invariant(name, rows, cols, k, warm, seed):
    """Gradients 2^k times larger (one step, or two: momentum and warm starts) give the very same new weights,
    finite and on the manifold."""
    W0, first, G = gaussian((rows, cols), seed), gaussian((rows, cols), seed + 1), gaussian((rows, cols), seed + 2)
    grads = [first, G] if warm else [G]
    reference = one_step(SCALE_FREE[name], W0, grads)
    scaled = one_step(SCALE_FREE[name], W0, [g * 2.0**k for g in grads])
    assert torch.isfinite(scaled).all()
    assert torch.equal(scaled, reference)
    if name in MANIFOLD:
        assert MANIFOLD[name].violation(scaled) < 1e-5


@pytest.mark.parametrize("name", SCALE_FREE)
@pytest.mark.parametrize("decade", [-30, -25, -23, -20, 18, 19, 20, 25, 30])
def test_decimal_extreme_gradients_give_finite_steps_near_the_unscaled_ones(name, decade):
    """10^decade is not a power of two, so the scaled gradients differ from G·10^decade by rounding only."""
    W0, first, G = gaussian((64, 32), 1), gaussian((64, 32), 2), gaussian((64, 32), 3)
    reference = one_step(SCALE_FREE[name], W0, [first, G])
    extreme = one_step(SCALE_FREE[name], W0, [first * 10.0**decade, G * 10.0**decade])
    assert torch.isfinite(extreme).all()
    # Muon's 5 unconverged Polar Express steps pass rounding of the smallest singular directions on (~2 %).
    step = torch.linalg.vector_norm(reference - W0)
    assert torch.linalg.vector_norm(extreme - reference) <= 0.05 * step


@pytest.mark.parametrize("name", SCALE_FREE)
@pytest.mark.parametrize("decade", [-30, -23, 18, 19, 30])
def test_an_extreme_gradient_after_an_ordinary_step_moves_to_a_finite_point_on_the_manifold(name, decade):
    W0, first, G = gaussian((64, 32), 1), gaussian((64, 32), 2), gaussian((64, 32), 3)
    after_first = one_step(SCALE_FREE[name], W0, [first])
    extreme = one_step(SCALE_FREE[name], W0, [first, G * 10.0**decade])
    assert torch.isfinite(extreme).all() and not torch.equal(extreme, after_first)
    if name in MANIFOLD:
        assert MANIFOLD[name].violation(extreme) < 1e-5


def test_manifold_muon_multiplier_scales_with_the_gradient_and_a_poisoned_warm_start_is_dropped():
    W = nn.Parameter(gaussian((64, 32), 4))
    opt = ManifoldMuon([W], lr=0.1)
    W.grad = gaussian((64, 32), 5)
    opt.step()
    small = opt.state[W]["multiplier"].clone()
    opt.state[W]["multiplier"].fill_(float("nan"))
    W.grad = gaussian((64, 32), 5) * 2.0**60
    opt.step()
    assert torch.isfinite(W).all() and torch.isfinite(opt.state[W]["multiplier"]).all()
    assert opt.state[W]["multiplier"].abs().max() > 2.0**50 * small.abs().max()


WRAPPERS = {
    "StiefelRetraction": (lambda m: StiefelRetraction(torch.optim.AdamW(m.parameters(), lr=1e-2)), Stiefel()),
    "SpectralRetraction": (lambda m: SpectralRetraction(torch.optim.AdamW(m.parameters(), lr=1e-2)), SpectralBall()),
}


@pytest.mark.parametrize("name", WRAPPERS)
@pytest.mark.parametrize("decade", [-30, -20, 0, 20, 30])
def test_wrappers_stay_finite_and_on_their_manifold_at_any_gradient_scale(name, decade):
    build, manifold = WRAPPERS[name]
    model = nn.Linear(32, 64, bias=False)
    opt = build(model)
    for seed in range(2):
        model.weight.grad = gaussian((64, 32), seed) * 10.0**decade
        opt.step()
    assert torch.isfinite(model.weight).all() and manifold.violation(model.weight) < 1e-5


@pytest.mark.parametrize("decade", [-30, 20, 30])
def test_modular_descent_and_modular_optimizer_take_any_finite_gradient(decade):
    from modman.experiments.llm.model import PRESETS, Transformer

    net = MLP((12, 24, 5), seed=0)
    opt = ModularDescent(net, lr=0.2)
    model = Transformer(PRESETS["tiny"])
    mopt = ModularOptimizer(model, "manifold_muon")
    for module, o in ((net, opt), (model, mopt)):
        for seed, p in enumerate(module.parameters()):
            p.grad = gaussian(p.shape, seed) * 10.0**decade
        o.step()
        assert all(torch.isfinite(p).all() for p in module.parameters())


# ------------------------------------------------------------------------------------------------ edge shapes
def test_a_radial_gradient_gives_no_step_on_the_sphere():
    moved = 0
    for seed in range(50):
        W = nn.Parameter(Sphere(2.0).project(gaussian((16, 8), seed)))
        before = W.detach().clone()
        opt = HypersphericalDescent([W], lr=0.3, radius=2.0)
        W.grad = 3 * W.detach()
        opt.step()
        moved += not torch.equal(W, before)
    assert moved == 0


def test_a_slightly_tangent_gradient_still_moves_on_the_sphere():
    W = nn.Parameter(Sphere(1.0).project(gaussian((16, 8), 0)))
    tangent = Sphere(1.0).tangent(W.detach(), gaussian((16, 8), 1))
    opt = HypersphericalDescent([W], lr=0.1)
    before = W.detach().clone()
    W.grad = 3 * W.detach() + 1e-4 * tangent / tangent.norm()
    opt.step()
    moved = (W - before).detach()
    assert abs(torch.linalg.vector_norm(moved).item() - 2 * math.sin(math.atan(0.1) / 2)) < 1e-3
    assert torch.nn.functional.cosine_similarity(moved.flatten(), -tangent.flatten(), dim=0) > 0.99


@pytest.mark.parametrize(
    "build",
    [
        lambda ps: Muon(ps),
        lambda ps: SpectralDescent(ps),
        lambda ps: HypersphericalDescent(ps),
        lambda ps: ManifoldMuon(ps),
    ],
)
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0), (0, 3, 3, 3)])
def test_empty_parameters_are_a_no_op(build, shape):
    W = nn.Parameter(torch.zeros(shape))
    opt = build([W])
    W.grad = torch.zeros(shape)
    assert opt.step() is None and W.shape == shape


@pytest.mark.parametrize("manifold", [Sphere(), Sphere(dim=-1), Stiefel(), SpectralBall()])
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
def test_manifolds_accept_empty_matrices(manifold, shape):
    W = torch.zeros(shape)
    assert manifold.project(W).shape == shape and manifold.retract(W).shape == shape
    assert manifold.violation(W) == 0.0 and manifold.tangent(W, W).shape == shape
