"""SpectralSphere (retraction-only and SSO) against float64 formulas: the update, the tangent multiplier, the
constraint over long runs, σ_max by Lanczos, descent, and bad input."""

from functools import partial

import pytest
import torch
from torch import nn

from modman import msign
from modman.manifolds import SpectralSphere as SphereSet
from modman.optim import SpectralSphere
from modman.rules.spectral_sphere import gram, lanczos_top, sso_direction, start_vector

exact = partial(msign, method="exact")


def top_pair(W):
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    return S[0], U[:, 0], Vh[0]


@pytest.mark.parametrize("shape", [(12, 8), (8, 12), (10, 10), (40, 24)])
@pytest.mark.parametrize("lanczos_steps", ["auto", None])
def test_step_is_the_float64_formula(shape, lanczos_steps):
    """W ← R·V/σ_max(V), V = W − η·R·msign(G), R = c·√(out/in); W rescaled onto the sphere when built."""
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(*shape, generator=g, dtype=torch.float64)
    G = torch.randn(*shape, generator=g, dtype=torch.float64)
    W = nn.Parameter(W0.clone())
    opt = SpectralSphere([W], lr=0.1, momentum=0.0, radius=2.0, msign_method="exact", lanczos_steps=lanczos_steps)
    R = 2.0 * (shape[0] / shape[1]) ** 0.5
    start = W.detach().clone()
    assert torch.allclose(start, W0 * R / torch.linalg.matrix_norm(W0, ord=2), atol=1e-12)
    W.grad = G
    opt.step()
    V = start - 0.1 * R * msign(G, method="exact")
    want = R * V / torch.linalg.matrix_norm(V, ord=2)
    assert torch.allclose(W.detach(), want, atol=1e-8)
    assert opt.state[W]["msign_calls"] == 1


@pytest.mark.parametrize("shape", [(24, 16), (16, 24), (20, 20)])
def test_sso_direction_is_tangent_and_steepest(shape):
    """msign(X + λΘ) at the root of h: ⟨u₁v₁ᵀ, Φ⟩ = 0 against the float64 SVD, and the dual bound
    ‖X + λΘ‖_* is attained (so no unit-spectral-norm tangent direction descends more)."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    M = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(W, full_matrices=False)
    u, v = U[..., :, 0], Vh[..., 0, :]
    phi, info = sso_direction(M, u, v, exact, tol=1e-11, max_evals=80, clean=False)
    theta = u[..., :, None] * v[..., None, :]
    assert (theta * phi).sum((-2, -1)).abs().max() < 1e-10
    X = M / M.norm(dim=(-2, -1), keepdim=True)
    lam = info["lam"]  # h is solved, so the Newton prediction is the root itself
    dual = torch.linalg.matrix_norm(X + lam[:, None, None] * theta, ord="nuc")
    assert torch.allclose((X * phi).sum((-2, -1)), dual, atol=1e-9)
    assert torch.linalg.matrix_norm(phi, ord=2).max() < 1 + 1e-9
    # h is non-decreasing in λ (the derivative of a convex function)
    hs = [float((theta[0] * exact(X[0] + t * theta[0])).sum()) for t in torch.linspace(-2, 2, 41).tolist()]
    assert all(b >= a - 1e-12 for a, b in zip(hs, hs[1:])) and hs[0] < 0 < hs[-1]


def test_sso_warm_step_and_cleaning():
    """From the last multiplier, a few secant evaluations reach |h| <= tol; cleaning makes Φ tangent to rounding."""
    g = torch.Generator().manual_seed(2)
    W = torch.randn(2, 32, 16, generator=g, dtype=torch.float64)
    M = torch.randn(2, 32, 16, generator=g, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(W, full_matrices=False)
    u, v = U[..., :, 0], Vh[..., 0, :]
    _, cold = sso_direction(M, u, v, exact, tol=1e-8, max_evals=60)
    M2 = M + 0.02 * torch.randn(M.shape, generator=g, dtype=torch.float64)
    phi, warm = sso_direction(M2, u, v, exact, cold["lam"], cold["slope"], evals=4, tol=1e-8)
    assert warm["msign_calls"] <= 4 and warm["h"].abs().max() < 1e-6
    theta = u[..., :, None] * v[..., None, :]
    assert (theta * phi).sum((-2, -1)).abs().max() < 1e-12  # cleaned
    phi1, one = sso_direction(M2, u, v, exact, cold["lam"], cold["slope"], evals=1)
    assert one["msign_calls"] == 1 and (theta * phi1).sum((-2, -1)).abs().max() < 1e-12


def test_sso_optimizer_moves_tangent_to_the_sphere():
    """The optimizer's SSO direction (captured) is orthogonal to W's top singular pair from the float64 SVD."""
    import modman.optim.constrained as constrained

    seen = []

    def spy(*args, **kwargs):
        out = sso_direction(*args, **kwargs)
        seen.append(out[0])
        return out

    torch.manual_seed(3)
    W = nn.Parameter(torch.randn(24, 16, dtype=torch.float64))
    opt = SpectralSphere([W], lr=0.05, tangent=True, msign_method="exact")
    mp = pytest.MonkeyPatch()
    mp.setattr(constrained, "sso_direction", spy)
    try:
        for _ in range(5):
            _, u, v = top_pair(W.detach())
            W.grad = torch.randn_like(W)
            opt.step()
            assert abs(float(u @ seen[-1][0] @ v)) < 1e-9
    finally:
        mp.undo()
    assert SphereSet(1.5**0.5).violation(W.detach()) < 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("tangent", [False, True])
def test_the_sphere_holds_over_1000_float32_steps(tangent):
    """Random gradients: singular values at the top cluster and cross, the hard case for σ_max's search."""
    torch.manual_seed(4)
    # n = min(m, n) above the Lanczos steps of either variant (16, 48): the Krylov space is not the whole space
    Ws = [nn.Parameter(torch.randn(96, 64)), nn.Parameter(torch.randn(64, 96)), nn.Parameter(torch.randn(72, 72))]
    opt = SpectralSphere(Ws, tangent=tangent)
    for _ in range(1000):
        for W in Ws:
            W.grad = torch.randn_like(W)
        opt.step()
    for W in Ws:
        R = (W.shape[0] / W.shape[1]) ** 0.5
        assert SphereSet(R).violation(W.detach()) < 1e-5


def test_lanczos_finds_the_top_eigenvalue():
    g = torch.Generator().manual_seed(5)
    V = torch.randn(4, 200, 80, generator=g)
    K = gram(V)
    want = torch.linalg.eigvalsh(K.double())[..., -1]
    x = start_vector(80, torch.float32, K.device).expand(4, 80)
    top, vec = lanczos_top(V, x, 80)  # the whole space: exact
    assert torch.allclose(top.double(), want, rtol=1e-5)
    warm, _ = lanczos_top(V, vec + 0.3 * x, 16)  # warm: 16 steps from the answer and a generic vector
    assert torch.allclose(warm.double(), want, rtol=1e-6)
    assert (lanczos_top(V, x, 4)[0].double() <= want * (1 + 1e-6)).all()  # a Ritz value is a lower bound
    assert torch.allclose(lanczos_top(V.mT, x, 80)[0].double(), want, rtol=1e-5)  # wide: the smaller Gram
    assert gram(V.mT).shape == (4, 80, 80)


def test_descent_on_a_convex_problem_to_a_point_of_the_sphere():
    torch.manual_seed(6)
    for tangent in (False, True):
        goal = SphereSet(2**0.5).project(torch.randn(16, 8))
        W = nn.Parameter(torch.randn(16, 8))
        opt = SpectralSphere([W], lr=0.05, momentum=0.9, tangent=tangent)
        losses = []
        for _ in range(300):
            opt.zero_grad()
            loss = (W - goal).square().sum()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.05 * losses[0], (tangent, losses[0], losses[-1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"radius": 0.0}, "radius"),
        ({"radius": -2.0}, "radius"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"tangent": 1}, "tangent"),
        ({"lanczos_steps": 0}, "lanczos_steps"),
        ({"sso_evals": 0}, "sso_evals"),
    ],
)
def test_bad_hyperparameters_are_refused_before_anything_changes(kwargs, match):
    W = nn.Parameter(torch.randn(6, 4))
    before = W.detach().clone()
    with pytest.raises(ValueError, match=match):
        SpectralSphere([W], **kwargs)
    assert torch.equal(W, before)


def test_a_vector_and_a_zero_matrix_are_refused_naming_them():
    W = nn.Parameter(torch.randn(6, 4))
    before = W.detach().clone()
    with pytest.raises(ValueError, match="bias.*matrices"):
        SpectralSphere([("w", W), ("bias", nn.Parameter(torch.randn(4)))])
    with pytest.raises(ValueError, match="'zero'.*all zeros.*orthogonal_"):
        SpectralSphere([("w", W), ("zero", nn.Parameter(torch.zeros(5, 3)))])
    assert torch.equal(W, before)  # nothing was rescaled


def test_conv_kernels_are_out_by_rest_matrices_for_the_whole_family():
    """(8, 3, 3, 3) kernels are the 8×27 matrices they reshape to: each constraint holds on that matrix."""
    from modman.manifolds import Stiefel
    from modman.optim import SPEL, Hyperball

    torch.manual_seed(7)
    cases = [
        (SpectralSphere, {}, lambda M, M0: SphereSet((8 / 27) ** 0.5).violation(M)),
        (SpectralSphere, {"tangent": True}, lambda M, M0: SphereSet((8 / 27) ** 0.5).violation(M)),
        (Hyperball, {}, lambda M, M0: abs(float(M.norm() / M0.norm()) - 1)),
        (SPEL, {}, lambda M, M0: Stiefel().violation(M)),
    ]
    for cls, kw, violation in cases:
        conv = nn.Conv2d(3, 8, 3, bias=False)
        opt = cls([conv.weight], lr=0.05, **kw)
        start = conv.weight.detach().reshape(8, 27).clone()
        for _ in range(3):
            conv.weight.grad = torch.randn_like(conv.weight)
            opt.step()
        assert conv.weight.shape == (8, 3, 3, 3)
        M = conv.weight.detach().reshape(8, 27)
        assert not torch.equal(M, start) and violation(M, start) < 1e-5, cls.__name__
