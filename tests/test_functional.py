"""The blog's functions and the rules behind them: hyperspherical descent, manifold Muon, Muon, spectral."""

import math
from functools import partial

import pytest
import seed_reference
import torch
from hypothesis import given
from hypothesis import strategies as st

from modman import msign
from modman.functional import hyperspherical_descent, manifold_muon, muon, spectral_descent
from modman.manifolds import SpectralBall, Sphere, Stiefel
from modman.rules import hyperspherical_direction, manifold_muon_direction, tangent_residual


def gaussian(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def on_stiefel(m, n, seed):
    return Stiefel().project(gaussian(m, n, seed=seed))


# ------------------------------------------------------------------ hyperspherical descent
@given(st.tuples(st.integers(1, 12), st.integers(1, 12)), st.floats(0.0, 3.0), st.integers(0, 10**6))
def test_property_hyperspherical_keeps_unit_norm_and_turns_by_arctan_eta(shape, eta, seed):
    W = Sphere().project(gaussian(*shape, seed=seed, dtype=torch.float64))
    G = gaussian(*shape, seed=seed + 1, dtype=torch.float64)
    if Sphere().tangent(W, G).norm() < 1e-9:  # G parallel to W (e.g. a 1x1 tensor): no direction
        return
    new = hyperspherical_descent(W, G, eta=eta)
    assert math.isclose(new.norm().item(), 1.0, abs_tol=1e-12)
    angle = math.acos(max(-1.0, min(1.0, (W * new).sum().item())))
    assert math.isclose(angle, math.atan(eta), abs_tol=1e-7)
    # and it moves downhill: the first-order change ⟨G, new − W⟩ is negative for eta > 0
    if eta > 1e-6:
        assert (G * (new - W)).sum().item() < 0


def test_hyperspherical_matches_seed():
    W = Sphere().project(gaussian(16, 8, seed=1))
    G = gaussian(16, 8, seed=2)
    assert torch.allclose(
        hyperspherical_descent(W, G, 0.3), seed_reference.hyperspherical_descent(W, G, 0.3), atol=1e-6
    )


def test_hyperspherical_zero_gradient_gives_zero_direction():
    W = Sphere(dim=-1).project(gaussian(4, 6, seed=3))
    G = gaussian(4, 6, seed=4)
    G[1] = 0
    A, info = hyperspherical_direction(W, G, Sphere(dim=-1))
    assert torch.equal(A[1], torch.zeros(6)) and info["msign_calls"] == 0
    assert torch.allclose(A.norm(dim=-1)[[0, 2, 3]], torch.ones(3))


# ------------------------------------------------------------------ manifold Muon
@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (24, 24)])
@pytest.mark.parametrize("eta", [0.0, 0.1, 0.5])
def test_dual_ascent_is_the_seeds_algorithm_step_for_step(shape, eta, monkeypatch):
    """With the blog's own msign, the functional dual ascent reproduces the blog's bit for bit (same iteration,
    multiplier, stopping rule and retraction)."""
    import modman.functional as functional

    monkeypatch.setattr(
        functional,
        "msign",
        lambda G, method=None, steps=None, dtype=None: seed_reference.msign(
            G.clone(), steps=steps, compute_dtype=dtype or torch.float32
        ),
    )
    W = on_stiefel(*shape, seed=5)
    G = gaussian(*shape, seed=6)
    ours = manifold_muon(W, G, eta=eta, solver="dual_ascent", msign_dtype=torch.bfloat16)
    assert torch.equal(ours, seed_reference.manifold_muon(W, G, eta=eta))


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (24, 24)])
def test_dual_ascent_in_bf16_agrees_with_the_seed_to_bf16_rounding(shape):
    W = on_stiefel(*shape, seed=5)
    G = gaussian(*shape, seed=6)
    ours = manifold_muon(W, G, eta=0.1, solver="dual_ascent", msign_dtype=torch.bfloat16)
    assert (ours - seed_reference.manifold_muon(W, G, eta=0.1)).abs().max() < 0.05


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)])
def test_dual_ascent_reproduces_seed_iteration_in_float32(shape):
    W = on_stiefel(*shape, seed=7)
    G = gaussian(*shape, seed=8)
    ours = manifold_muon(W, G, eta=0.2, steps=30, solver="dual_ascent")
    seed = seed_reference.manifold_muon(W, G, eta=0.2, steps=30, msign_dtype=torch.float32)
    assert torch.allclose(ours, seed, atol=2e-6)


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (20, 20)])
def test_manifold_muon_stays_on_stiefel_and_reports_info(shape):
    W = on_stiefel(*shape, seed=9)
    G = gaussian(*shape, seed=10)
    new, info = manifold_muon(W, G, eta=0.1, return_info=True, solver="dual_ascent")
    assert Stiefel().violation(new) < 1e-5
    A, Lam = info["direction"], info["multiplier"]
    n = min(shape)
    assert A.shape == W.shape and Lam.shape == (n, n)
    assert torch.allclose(Lam, Lam.mT, atol=1e-6)
    assert torch.linalg.matrix_norm(A.double(), ord=2) <= 1 + 1e-5
    Wt, At = (W, A) if shape[0] >= shape[1] else (W.mT, A.mT)
    assert math.isclose(info["residual"], tangent_residual(Wt, At), rel_tol=1e-5)
    assert info["msign_calls"] == info["iterations"] + 1 and 1 <= info["iterations"] <= 100
    assert (G * A).sum() > 0  # an ascent direction for the loss, so W − ηA descends


def test_manifold_muon_eta_zero_zero_grad_is_the_seeds_projection():
    W = gaussian(30, 10, seed=11)
    P = manifold_muon(W, torch.zeros_like(W), eta=0)
    assert Stiefel().violation(P) < 1e-6
    assert torch.allclose(P, msign(W), atol=0)


def test_warm_start_from_a_solved_multiplier_needs_fewer_iterations():
    W = on_stiefel(64, 16, seed=12)
    G = gaussian(64, 16, seed=13)
    _, cold = manifold_muon_direction(W, G, alpha=1.0, steps=100, tol=1e-6, solver="dual_ascent")
    assert cold["residual"] < 1e-6 and cold["iterations"] > 5
    _, warm = manifold_muon_direction(
        W, G, alpha=1.0, steps=100, tol=1e-6, multiplier=cold["multiplier"], solver="dual_ascent"
    )
    assert warm["iterations"] <= 2 and warm["residual"] < 1e-6


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"solver": "lbfgs"}, "unknown solver"),
        ({"steps": 0}, "steps"),
        ({"multiplier": torch.zeros(3, 3)}, "multiplier"),
    ],
)
def test_manifold_muon_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        manifold_muon_direction(on_stiefel(12, 6, 0), gaussian(12, 6), **kwargs)


def test_manifold_muon_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(12, 6\).*\(6, 12\)"):
        manifold_muon(on_stiefel(12, 6, 0), gaussian(6, 12))


# ------------------------------------------------------------------ Muon and spectral-ball descent
def test_muon_function_is_w_minus_eta_msign():
    W, G = gaussian(20, 10, seed=14), gaussian(20, 10, seed=15)
    assert torch.allclose(muon(W, G, eta=0.05), W - 0.05 * msign(G, steps=None), atol=0)


@given(st.tuples(st.integers(1, 16), st.integers(1, 16)), st.floats(0.0, 2.0), st.integers(0, 10**6))
def test_property_spectral_descent_stays_in_ball(shape, eta, seed):
    W = SpectralBall().project(gaussian(*shape, seed=seed))
    new = spectral_descent(W, gaussian(*shape, seed=seed + 1), eta=eta)
    assert SpectralBall().violation(new) <= 1e-6


def _f64(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(12, 8), (8, 12), (9, 9)])
def test_constrained_family_one_call_functions_are_the_float64_formulas(shape):
    from modman.functional import hyperball_step, spectral_sphere_step, spel_step
    from modman.manifolds import SpectralSphere

    W, G = _f64(*shape, seed=1), _f64(*shape, seed=2)
    exact = msign(G, method="exact")
    V = W - 0.1 * 2.0 * exact
    got = spectral_sphere_step(W, G, 0.1, 2.0, msign_method="exact")
    assert torch.allclose(got, 2.0 * V / torch.linalg.matrix_norm(V, ord=2), atol=1e-12)
    R = W.norm()
    V = W - 0.1 * R * exact / exact.norm()
    assert torch.allclose(hyperball_step(W, G, 0.1, msign_method="exact"), R * V / V.norm(), atol=1e-12)
    assert torch.allclose(
        spel_step(W, G, 0.1, 3.0, msign_method="exact"), 3.0 * msign(W - 0.1 * exact, method="exact"), atol=1e-12
    )
    # SSO: against msign(X + λ*Θ) at the multiplier solved to 1e-12 (the one call solves to 1e-3, then cleans)
    from modman.rules.spectral_sphere import sso_direction

    W0 = SpectralSphere(2.0).retract(W)
    U, _, Vh = torch.linalg.svd(W0)
    phi, _ = sso_direction(
        G[None], U[None, :, 0], Vh[None, 0], partial(msign, method="exact"), tol=1e-12, max_evals=80, clean=False
    )
    want = SpectralSphere(2.0).retract(W0 - 0.1 * 2.0 * phi[0])
    new = spectral_sphere_step(W0, G, 0.1, 2.0, tangent=True, msign_method="exact")
    assert SpectralSphere(2.0).violation(new) < 1e-12
    assert (new - want).abs().max() < 2e-3 * 0.2
