"""The matrix-product-only ``tracking`` solver: tangent directions, convergence where the dual is smooth, warm
starts, the retraction without msign, and the ``solver`` option of ModularOptimizer and ``modman train``."""

from functools import partial

import pytest
import torch

from modman import msign
from modman.experiments.llm.config import TrainConfig
from modman.experiments.llm.model import PRESETS, Transformer
from modman.manifolds import Stiefel
from modman.optim import ManifoldMuon, ModularOptimizer
from modman.optim.modular import MANIFOLD_MUON_STEPS
from modman.rules import duality_gap, manifold_muon_direction, tangent_residual
from modman.rules.manifold_muon import Problem
from modman.rules.manifold_muon.tracking import lyapunov_cg, tracking


def problem(m, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    W = Stiefel().project(torch.randn(m, n, generator=g, dtype=torch.float64))
    return W.to(dtype), torch.randn(m, n, generator=g, dtype=torch.float64).to(dtype)


EXACT = partial(msign, method="exact")


def test_lyapunov_cg_solves_the_symmetric_system():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(12, 12, generator=g, dtype=torch.float64)
    S = B @ B.mT + 0.5 * torch.eye(12, dtype=torch.float64)
    Q = torch.randn(12, 12, generator=g, dtype=torch.float64)
    Q = Q + Q.mT
    D = lyapunov_cg(S, Q, steps=60)
    assert torch.allclose(S @ D + D @ S, Q, atol=1e-8) and torch.equal(D, D.mT)
    assert torch.equal(lyapunov_cg(S, torch.zeros_like(Q), 5), torch.zeros_like(Q))


@pytest.mark.parametrize("shape", [(96, 24), (240, 10), (128, 32)])  # aspect 4, 24, 4
def test_iterations_converge_to_the_certified_optimum_where_the_dual_is_smooth(shape):
    W, G = problem(*shape)
    gaps = []
    for steps in (1, 3, 30):
        A, Lam, info = tracking(Problem(W, G, steps=steps, msign_fn=EXACT))
        gaps.append(duality_gap(W, G, A, Lam)["relative_gap"])
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-5, gaps


@pytest.mark.parametrize("shape", [(96, 24), (30, 20), (24, 96)])
def test_the_direction_is_tangent_and_a_warm_start_at_the_optimum_stays_there(shape):
    W, G = problem(*shape)
    A, info = manifold_muon_direction(W, G, solver="tracking", steps=1)
    Wt, At = (W, A) if shape[0] >= shape[1] else (W.mT, A.mT)
    assert tangent_residual(Wt, At) < 1e-12  # repaired onto the tangent space, whatever the multiplier
    best, best_info = manifold_muon_direction(W, G, solver="hybrid", tol=1e-10, steps=300)
    warm, warm_info = manifold_muon_direction(W, G, solver="tracking", steps=1, multiplier=best_info["multiplier"])
    assert warm_info["residual"] < 1e-5 and torch.allclose(warm, best, atol=1e-5)
    assert info["residual"] > 10 * warm_info["residual"]


@pytest.mark.parametrize("eta,atol", [(0.01, 1e-10), (0.1, 1e-10), (0.5, 1e-5)])  # series error ~‖E‖⁵, then squared
def test_retraction_of_a_tangent_non_isometry_is_the_polar_factor_without_msign(eta, atol):
    W, G = problem(64, 16)
    A, _, info = tracking(Problem(W, G, steps=1, msign_fn=EXACT))
    new, used_msign = Stiefel().retract_step(W, A, eta)
    exact = msign(W - eta * A, method="exact")
    assert not used_msign and torch.allclose(new, exact, atol=atol)


def test_manifold_muon_with_tracking_keeps_weights_on_stiefel_and_uses_one_msign_per_step():
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(128, 32))
    opt = ManifoldMuon([W], lr=0.1, solver="tracking", steps=1, momentum=0.9, nesterov=True)
    for _ in range(200):
        W.grad = torch.randn(128, 32)
        opt.step()
    assert Stiefel().violation(W.detach()) < 1e-5
    assert opt.state[W]["msign_calls"] == 1 and opt.state[W]["solver"] == "tracking"


def test_solver_option_reaches_the_manifold_muon_optimizer_and_bad_names_are_refused():
    model = Transformer(PRESETS["tiny"])
    for solver, steps in (("tracking", None), ("auto", None), ("certified", MANIFOLD_MUON_STEPS)):
        group = ModularOptimizer(model, "manifold_muon", solver=solver).optimizers["manifold_muon"].param_groups[0]
        assert group["solver"] == solver and group["steps"] == steps
    assert ModularOptimizer(model, "manifold_muon").optimizers["manifold_muon"].param_groups[0]["solver"] == "auto"
    with pytest.raises(ValueError, match="unknown solver 'fast'.*tracking"):
        ModularOptimizer(model, "manifold_muon", solver="fast")
    with pytest.raises(ValueError, match="--solver: unknown manifold Muon solver"):
        TrainConfig(solver="fast")
