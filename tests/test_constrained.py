"""The constrained-Muon family against direct float64 formulas: the update, the constraint over long runs,
descent, and bad input."""

import pytest
import torch
from torch import nn

from modman import msign
from modman.manifolds import Stiefel
from modman.optim import SPEL, Hyperball


def exact_hyperball(W, G, lr, norm):
    """R·V/‖V‖_F, V = W − η·R·U/‖U‖_F, U = msign(G), all in float64 from the SVD."""
    U_, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    U = U_ @ Vh
    V = W.double() - lr * norm * U / U.norm()
    return norm * V / V.norm()


@pytest.mark.parametrize("shape", [(12, 8), (8, 12), (10, 10)])
@pytest.mark.parametrize("norm", [None, 3.0])
def test_hyperball_step_is_the_float64_formula(shape, norm):
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(*shape, generator=g, dtype=torch.float64)
    G = torch.randn(*shape, generator=g, dtype=torch.float64)
    W = nn.Parameter(W0.clone())
    opt = Hyperball([W], lr=0.1, momentum=0.0, norm=norm, msign_method="exact")
    R = W0.norm() if norm is None else torch.tensor(norm, dtype=torch.float64)
    start = W.detach().clone()  # projected onto ‖W‖_F = R when norm is given
    assert torch.allclose(start.norm(), R, rtol=1e-12)
    W.grad = G
    opt.step()
    assert torch.allclose(W.detach(), exact_hyperball(start, G, 0.1, R), atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("norm", [None, 2.0])
def test_hyperball_keeps_the_frobenius_norm_over_1000_float32_steps(norm):
    torch.manual_seed(0)
    Ws = [nn.Parameter(torch.randn(24, 12)), nn.Parameter(torch.randn(12, 24)), nn.Parameter(torch.randn(24, 12))]
    targets = [w.detach().norm().item() if norm is None else norm for w in Ws]
    opt = Hyperball(Ws, lr=0.05, norm=norm)
    for _ in range(1000):
        for W in Ws:
            W.grad = torch.randn_like(W)
        opt.step()
    for W, R in zip(Ws, targets):
        assert abs(W.detach().double().norm().item() / R - 1) < 1e-5


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"norm": 0.0}, "norm"),
        ({"norm": -1.0}, "norm"),
        ({"norm": float("nan")}, "norm"),
        ({"lr": float("inf")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
    ],
)
def test_hyperball_bad_hyperparameters_are_refused_before_anything_changes(kwargs, match):
    W = nn.Parameter(torch.randn(6, 4))
    before = W.detach().clone()
    with pytest.raises(ValueError, match=match):
        Hyperball([W], **kwargs)
    assert torch.equal(W, before)


def test_hyperball_refuses_a_zero_matrix_without_a_norm_and_a_vector():
    zero = nn.Parameter(torch.zeros(6, 4))
    with pytest.raises(ValueError, match=r"'w'.*norm 0.*norm=R"):
        Hyperball([("w", zero)])
    Hyperball([("w", zero)], norm=1.0)  # a given norm projects it (a constant matrix of that norm)
    assert abs(zero.detach().norm().item() - 1.0) < 1e-6
    with pytest.raises(ValueError, match="bias.*matrices"):
        Hyperball([("bias", nn.Parameter(torch.randn(4)))])


@pytest.mark.parametrize("shape", [(12, 8), (8, 12), (10, 10)])
@pytest.mark.parametrize("radius", [1.0, 2.0])
def test_spel_step_is_the_float64_formula(shape, radius):
    """W ← r·polar(W − η·msign(G)), both from the float64 SVD."""
    g = torch.Generator().manual_seed(3)
    W = nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64))
    G = torch.randn(*shape, generator=g, dtype=torch.float64)
    opt = SPEL([W], lr=0.05, momentum=0.0, radius=radius, msign_method="exact")
    start = W.detach().clone()
    assert Stiefel(radius).violation(start) < 1e-12  # projected when built
    W.grad = G
    opt.step()
    want = radius * msign(start - 0.05 * msign(G, method="exact"), method="exact")
    assert torch.allclose(W.detach(), want, atol=1e-10)
    assert opt.state[W]["msign_calls"] == 1  # the retraction needed none


@pytest.mark.slow
def test_spel_stays_on_stiefel_over_1000_float32_steps():
    torch.manual_seed(4)
    Ws = [nn.Parameter(torch.randn(24, 12)), nn.Parameter(torch.randn(12, 24)), nn.Parameter(torch.randn(16, 16))]
    opt = SPEL(Ws, lr=0.05)
    for _ in range(1000):
        for W in Ws:
            W.grad = torch.randn_like(W)
        opt.step()
    assert max(Stiefel().violation(W.detach()) for W in Ws) < 1e-5


@pytest.mark.parametrize(
    "kwargs,match", [({"radius": 0.0}, "radius"), ({"radius": float("inf")}, "radius"), ({"lr": -1.0}, "lr")]
)
def test_spel_bad_input_is_refused_before_anything_changes(kwargs, match):
    W = nn.Parameter(torch.randn(6, 4))
    before = W.detach().clone()
    with pytest.raises(ValueError, match=match):
        SPEL([W], **kwargs)
    assert torch.equal(W, before)
    with pytest.raises(ValueError, match="bias.*matrices"):
        SPEL([("bias", nn.Parameter(torch.randn(4)))])


@pytest.mark.parametrize(
    "make,target",
    [
        (lambda W: Hyperball([W], lr=0.05, momentum=0.9, norm=4.0), lambda T: 4.0 * T / T.norm()),
        (lambda W: SPEL([W], lr=0.05, momentum=0.9), lambda T: Stiefel().project(T)),
    ],
)
def test_descent_on_a_convex_problem_to_a_point_of_the_constraint_set(make, target):
    torch.manual_seed(1)
    goal = target(torch.randn(16, 8))
    W = nn.Parameter(torch.randn(16, 8))
    opt = make(W)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = (W - goal).square().sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
