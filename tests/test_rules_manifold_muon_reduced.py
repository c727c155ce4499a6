"""Float32 weights: the solvers work at W's polar factor, so a float32 problem certifies like its float64 twin."""

import pytest
import torch
from test_rules_manifold_muon import problem

import modman.rules.manifold_muon.reduced as reduced
from modman.rules import duality_gap, manifold_muon_direction, tangent_residual
from modman.rules.manifold_muon.reduced import polar_correction


def test_polar_correction_gives_the_polar_factor_of_a_float32_stiefel_point():
    W, _ = problem(192, 128, seed=1, dtype=torch.float32)
    W64 = W.double()
    eye = torch.eye(128, dtype=torch.float64)
    assert float(torch.linalg.matrix_norm(W64.mT @ W64 - eye)) > 1e-7  # float32 rounding: not orthonormal in float64
    Q = W64 @ polar_correction(W)
    assert float(torch.linalg.matrix_norm(Q.mT @ Q - eye)) < 1e-13
    U, _, Vh = torch.linalg.svd(W64, full_matrices=False)
    assert float(torch.linalg.matrix_norm(Q - U @ Vh)) < 1e-13


def test_polar_correction_leaves_a_matrix_off_the_manifold_alone():
    W, _ = problem(64, 32, seed=0)
    assert polar_correction(1.001 * W) is None
    assert polar_correction(W) is not None


@pytest.mark.slow
@pytest.mark.parametrize("shape,seed", [((192, 128), 1), ((384, 256), 1)])
def test_float32_aspect_1_5_certifies_like_float64(shape, seed, monkeypatch):
    """Aspect 1.5, M near singular at the optimum: solved as if WᵀW = I, these float32 problems stop at gaps
    4.4e-6 / 3.5e-6 (the solve amplifies W's ‖WᵀW − I‖_F ~ 3e-7); at W's polar factor they certify 4.2e-7 /
    3.7e-7 in the float64 twin's iterations, and the float64 certificate holds at the float32 W itself."""
    W, G = problem(*shape, seed, dtype=torch.float32)
    _, twin = manifold_muon_direction(W.double(), G.double(), solver="hybrid", steps=100, tol=1e-6)
    A, info = manifold_muon_direction(W, G, solver="hybrid", steps=100, tol=1e-6)
    assert info["gap"] < 1e-6 and info["residual"] < 1e-6
    assert info["iterations"] <= twin["iterations"] + 2
    W64, G64, A64 = W.double(), G.double(), A.double()
    assert duality_gap(W64, G64, A64, info["multiplier"].double())["relative_gap"] < 1e-6
    assert tangent_residual(W64, A64) < 1e-7
    monkeypatch.setattr(reduced, "polar_correction", lambda W: None)
    _, uncorrected = manifold_muon_direction(W, G, solver="hybrid", steps=100, tol=1e-6)
    assert uncorrected["gap"] > 2e-6
