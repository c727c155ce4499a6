"""One property suite run over every manifold: project, tangent, retract, violation."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from modman.manifolds import Euclidean, SpectralBall, SpectralSphere, Sphere, Stiefel


def gaussian(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def sym(X):
    return 0.5 * (X + X.mT)


def normal_vector(manifold, W, seed):
    """A vector in the normal space at W (the orthogonal complement of the tangent space)."""
    if isinstance(manifold, Sphere):
        dims = manifold.slice_dims(W)
        shape = [1 if d in [x % W.ndim for x in dims] else s for d, s in enumerate(W.shape)]
        return W * gaussian(*shape, seed=seed, dtype=W.dtype)
    if isinstance(manifold, Stiefel):
        k = min(W.shape[-2:])
        S = sym(gaussian(k, k, seed=seed, dtype=W.dtype))
        return W @ S if W.shape[-2] >= W.shape[-1] else S @ W
    if isinstance(manifold, SpectralSphere):
        U, _, Vh = torch.linalg.svd(W.double(), full_matrices=False)
        return (float(gaussian(1, seed=seed)) * torch.outer(U[:, 0], Vh[0])).to(W.dtype)
    return torch.zeros_like(W)  # Euclidean and the ball's interior: the normal space is {0}


MANIFOLDS = [
    Euclidean(),
    Sphere(),
    Sphere(2.5),
    Sphere(1.0, dim=-1),
    Sphere(0.5, dim=(0,)),
    Stiefel(),
    Stiefel(3.0),
    SpectralBall(),
    SpectralBall(0.3),
    SpectralSphere(),
    SpectralSphere(2.5),
]
SHAPES = [(32, 8), (8, 32), (16, 16), (1, 5)]


def cases():
    return [(m, s) for m in MANIFOLDS for s in SHAPES]


def ids(case):
    return f"{case[0]!r}-{case[1]}"


@pytest.mark.parametrize("case", cases(), ids=ids)
def test_project_lands_on_manifold_float32(case):
    manifold, shape = case
    W = gaussian(*shape, seed=1) * 7.0
    P = manifold.project(W)
    assert P.dtype == torch.float32 and P.shape == W.shape
    assert manifold.violation(P) <= 1e-6
    assert manifold.check_point(P)[0]


@pytest.mark.parametrize("case", cases(), ids=ids)
def test_tangent_is_idempotent_and_orthogonal_to_normal_space(case):
    manifold, shape = case
    W = manifold.project(gaussian(*shape, seed=2, dtype=torch.float64))
    G = gaussian(*shape, seed=3, dtype=torch.float64)
    T = manifold.tangent(W, G)
    assert torch.allclose(manifold.tangent(W, T), T, atol=1e-12)
    N = normal_vector(manifold, W, seed=4)
    assert abs((T * N).sum().item()) < 1e-10 * max(1.0, N.norm().item() * T.norm().item())
    # the removed part G − T is itself normal: orthogonal to the tangent vector
    assert abs((T * (G - T)).sum().item()) < 1e-10 * max(1.0, G.norm().item() ** 2)


@pytest.mark.parametrize("case", cases(), ids=ids)
def test_retract_after_small_tangent_step_is_on_manifold(case):
    manifold, shape = case
    W = manifold.project(gaussian(*shape, seed=5))
    T = manifold.tangent(W, gaussian(*shape, seed=6))
    step = W - 0.05 * T / T.norm().clamp_min(1e-12)
    assert manifold.violation(manifold.retract(step)) <= 1e-5


@pytest.mark.parametrize("manifold", [m for m in MANIFOLDS if not isinstance(m, Euclidean)], ids=repr)
def test_violation_is_positive_off_the_manifold(manifold):
    W = manifold.project(gaussian(24, 12, seed=7))
    assert manifold.violation(2.0 * W) > 0.5
    ok, reason = manifold.check_point(2.0 * W)
    assert not ok and "violation" in reason and "(24, 12)" in reason


def test_stiefel_tangent_space_condition_tall_and_wide():
    for shape in [(40, 10), (10, 40)]:
        W = Stiefel().project(gaussian(*shape, seed=8, dtype=torch.float64))
        T = Stiefel().tangent(W, gaussian(*shape, seed=9, dtype=torch.float64))
        H = W.mT @ T + T.mT @ W if shape[0] >= shape[1] else W @ T.mT + T @ W.mT
        assert H.abs().max() < 1e-12


def test_stiefel_orientation_and_radius():
    tall = Stiefel(2.0).project(gaussian(30, 6, seed=10, dtype=torch.float64))
    wide = Stiefel(2.0).project(gaussian(6, 30, seed=11, dtype=torch.float64))
    assert torch.allclose(tall.mT @ tall, 4 * torch.eye(6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(wide @ wide.mT, 4 * torch.eye(6, dtype=torch.float64), atol=1e-12)


def test_stiefel_project_of_rank_deficient_and_zero_is_still_on_manifold():
    low_rank = gaussian(20, 2, seed=12) @ gaussian(2, 8, seed=13)
    assert Stiefel().violation(Stiefel().project(low_rank)) < 1e-6
    assert Stiefel().violation(Stiefel().project(torch.zeros(8, 20))) < 1e-6


def test_sphere_rows_each_on_sphere_and_zero_row_filled():
    W = gaussian(5, 16, seed=14)
    W[2] = 0
    P = Sphere(3.0, dim=-1).project(W)
    assert torch.allclose(P.norm(dim=-1), torch.full((5,), 3.0))
    assert torch.allclose(P[2], torch.full((16,), 3.0 / 4.0))


def test_sphere_handles_vectors_and_zero_tensor():
    v = Sphere().project(torch.zeros(9))
    assert math.isclose(v.norm().item(), 1.0, rel_tol=1e-6) and torch.isfinite(v).all()


def test_spectral_ball_keeps_inside_points_bit_for_bit_and_clips_outside():
    ball = SpectralBall(1.0)
    W = gaussian(20, 10, seed=15)
    inside = W / (2 * torch.linalg.matrix_norm(W, ord=2))
    assert torch.equal(ball.project(inside), inside)
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    clipped = ball.project(W).double()
    assert torch.allclose(torch.linalg.svdvals(clipped), S.clamp_max(1.0), atol=1e-6)
    assert torch.allclose(U.mT @ clipped @ Vh.mT, torch.diag(S.clamp_max(1.0)), atol=1e-5)


def test_random_points_are_on_manifold():
    g = torch.Generator().manual_seed(0)
    for m in MANIFOLDS:
        assert m.violation(m.random((12, 7), generator=g)) <= 1e-6


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: Stiefel(radius=0), "radius"),
        (lambda: Sphere(radius=-1), "radius"),
        (lambda: SpectralBall(radius=float("nan")), "radius"),
        (lambda: Stiefel(retraction="qr"), "retraction"),
        (lambda: Stiefel().project(torch.ones(5)), r"\(5,\)"),
        (lambda: SpectralBall().project(torch.ones(5)), r"\(5,\)"),
        (lambda: Sphere(dim=3).project(torch.ones(5, 5)), "dim"),
        (lambda: Sphere().project(torch.tensor(1.0)), "0-D"),
    ],
)
def test_bad_input_raises_clear_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


manifold_strategy = st.sampled_from(MANIFOLDS)
shape_strategy = st.tuples(st.integers(1, 20), st.integers(1, 20))
scale_strategy = st.sampled_from([1e-4, 1e-2, 1.0, 1e2, 1e4])


@given(manifold_strategy, shape_strategy, scale_strategy, st.integers(0, 10**6))
def test_property_project_on_manifold_and_idempotent(manifold, shape, scale, seed):
    W = gaussian(*shape, seed=seed) * scale
    P = manifold.project(W)
    assert manifold.violation(P) <= 1e-6
    assert torch.allclose(manifold.project(P), P, atol=1e-6 * max(1.0, P.abs().max().item()))


@given(manifold_strategy, shape_strategy, scale_strategy, st.integers(0, 10**6))
def test_property_tangent_projection(manifold, shape, scale, seed):
    W = manifold.project(gaussian(*shape, seed=seed, dtype=torch.float64))
    G = gaussian(*shape, seed=seed + 1, dtype=torch.float64) * scale
    T = manifold.tangent(W, G)
    tol = 1e-10 * max(1.0, G.norm().item())
    assert (manifold.tangent(W, T) - T).abs().max() <= tol
    N = normal_vector(manifold, W, seed=seed + 2)
    assert abs((T * N).sum().item()) <= tol * max(1.0, N.norm().item())


def test_spectral_sphere_project_is_the_nearest_point_and_retract_rescales():
    W = gaussian(20, 8, seed=15, dtype=torch.float64) * 0.3
    sphere = SpectralSphere(1.5)
    P = sphere.project(W)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    want = S.clamp_max(1.5)
    want[0] = 1.5
    assert torch.allclose(torch.linalg.svdvals(P), want, atol=1e-12)
    # no other point of the sphere is nearer: compare with points that move one singular value
    for k in range(1, 8):
        Q = U @ torch.diag(torch.where(torch.arange(8) == k, torch.tensor(1.5, dtype=torch.float64), want)) @ Vh
        assert (W - P).norm() <= (W - Q).norm() + 1e-12
    R = sphere.retract(W)
    assert torch.allclose(R, W * 1.5 / S[0], atol=1e-12)  # same spectrum shape, scaled
    assert sphere.violation(R) < 1e-12 and sphere.violation(P) < 1e-12


def test_spectral_sphere_zero_matrix_and_bad_radius():
    sphere = SpectralSphere(2.0)
    assert sphere.violation(sphere.project(torch.zeros(5, 3))) < 1e-6
    assert sphere.violation(sphere.retract(torch.zeros(5, 3))) < 1e-6
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="radius"):
            SpectralSphere(bad)
    with pytest.raises(ValueError, match=r"\(7,\)"):
        sphere.project(torch.ones(7))
