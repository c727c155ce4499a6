"""Manifold Muon solvers against a high-accuracy float64 solve: residual, certified gap, objective."""

import pytest
import torch

from modman import msign
from modman.manifolds import Stiefel
from modman.rules import duality_gap, manifold_muon_direction, tangent_residual
from modman.rules.manifold_muon import Problem, hybrid, resolve_solver
from modman.rules.manifold_muon.fixed_point import fixed_point_loop
from modman.rules.manifold_muon.newton import newton_loop
from modman.rules.manifold_muon.reduced import reduced_problem, well_conditioned


def problem(m, n, seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    W = Stiefel().project(torch.randn(m, n, generator=g, dtype=torch.float64))
    G = torch.randn(m, n, generator=g, dtype=torch.float64) * scale
    return W.to(dtype), G.to(dtype)


def tall(W, A):
    return (W, A) if W.shape[0] >= W.shape[1] else (W.mT, A.mT)


def reference_value(W, G):
    """The optimum ⟨G, A*⟩ to ~1e-10: fixed point run long, bracketed by its certificate."""
    A, info = manifold_muon_direction(W, G, solver="fixed_point", steps=2000, tol=1e-11)
    cert = duality_gap(W, G, A, info["multiplier"])
    assert cert["relative_gap"] < 1e-8
    return cert["dual"]


def assert_optimal_within_1e6(W, G, A, info):
    """Tangent, feasible, certified gap <= 1e-6 and objective within 1e-6 of the reference solve."""
    Wt, At = tall(W, A)
    assert tangent_residual(Wt, At) <= 1e-6
    cert = duality_gap(W, G, A, info["multiplier"])
    assert cert["relative_gap"] <= 1e-6 and cert["gap"] >= -1e-9 * cert["dual"]
    assert torch.linalg.matrix_norm(A, ord=2) <= 1 + 1e-9
    objective = float((G * A).sum())
    assert abs(objective - reference_value(W, G)) <= 1e-6 * abs(objective)


@pytest.mark.parametrize("shape", [(96, 24), (240, 10), (24, 96), (60, 15)])  # aspect ratios 4, 24, 1/4, 4
@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_fixed_point_meets_residual_gap_and_objective_within_1e6(shape, scale):
    W, G = problem(*shape, seed=1, scale=scale)
    A, info = manifold_muon_direction(W, G, solver="fixed_point", tol=1e-7)
    assert_optimal_within_1e6(W, G, A, info)


def test_fixed_point_is_scale_invariant_and_reports_multiplier_in_g_units():
    W, G = problem(80, 20, seed=2)
    A1, i1 = manifold_muon_direction(W, G, solver="fixed_point", tol=1e-9)
    A2, i2 = manifold_muon_direction(W, 1e6 * G, solver="fixed_point", tol=1e-9)
    assert torch.allclose(A1, A2, atol=1e-9)
    assert torch.allclose(1e6 * i1["multiplier"], i2["multiplier"], rtol=1e-6, atol=1e-6)


def test_fixed_point_warm_start_from_its_solution_converges_at_once():
    W, G = problem(120, 30, seed=3)
    _, cold = manifold_muon_direction(W, G, solver="fixed_point", tol=1e-8)
    _, warm = manifold_muon_direction(W, G, solver="fixed_point", tol=1e-8, multiplier=cold["multiplier"])
    assert cold["iterations"] > 2 and warm["iterations"] == 1


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_fixed_point_handles_zero_and_low_rank_gradients(rank):
    W, _ = problem(40, 10, seed=4)
    g = torch.Generator().manual_seed(5)
    G = torch.randn(40, rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, 10, generator=g, dtype=torch.float64
    )
    A, info = manifold_muon_direction(W, G, solver="fixed_point", tol=1e-8)
    assert torch.isfinite(A).all()
    if rank == 0:
        assert torch.equal(A, torch.zeros_like(A))
    else:
        # A degenerate dual: the objective is still certified near-optimal and A feasible, but the
        # tangency residual converges slowly (documented limitation; full-rank G reaches 1e-6).
        assert info["residual"] < 1e-3
        assert torch.linalg.matrix_norm(A, ord=2) <= 1 + 1e-9
        cert = duality_gap(W, G, A, info["multiplier"])
        assert cert["relative_gap"] < 1e-4


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_closed_form_on_square_matches_exact_formula(dtype, atol):
    W, G = problem(32, 32, seed=6, dtype=dtype)
    A, info = manifold_muon_direction(W, G, solver="closed_form", msign_fn=lambda X: msign(X, steps=16))
    P = (W.mT @ G).double()
    expected = W.double() @ msign(0.5 * (P - P.mT), method="exact")
    assert torch.allclose(A.double(), expected, atol=atol)
    assert info["msign_calls"] == 1 and info["residual"] < atol


def test_closed_form_refuses_non_square():
    W, G = problem(30, 10)
    with pytest.raises(ValueError, match="closed_form.*square.*fixed_point"):
        manifold_muon_direction(W, G, solver="closed_form")


@pytest.mark.parametrize(
    "solver,warm,tall",
    [
        ("auto", True, "tracking"),
        ("auto", False, "hybrid"),
        ("certified", True, "hybrid"),
        ("certified", False, "hybrid"),
    ],
)
def test_auto_and_certified_pick_closed_form_for_square_and_auto_tracks_a_warm_multiplier(solver, warm, tall):
    for shape, name, calls in [
        ((16, 16), "closed_form", 1),
        ((48, 16), tall, int(tall == "tracking")),
        ((16, 48), tall, int(tall == "tracking")),
    ]:
        W, G = problem(*shape, seed=7)
        n = min(shape)
        multiplier = -0.25 * torch.eye(n, dtype=W.dtype) if warm else None
        A, info = manifold_muon_direction(W, G, solver=solver, multiplier=multiplier)
        _, same = manifold_muon_direction(W, G, solver=name, multiplier=multiplier)
        assert resolve_solver(solver, shape, warm) == name and info["solver"] == name
        assert info["msign_calls"] == calls
        assert info["iterations"] == same["iterations"] and info["residual"] == same["residual"]


def test_seed_dual_ascent_is_far_from_optimal_where_fixed_point_is_not():
    """The measurement that motivates the fast solver: the blog's 100 dual steps stop far from tol."""
    W, G = problem(128, 32, seed=8, dtype=torch.float32)
    A_seed, seed_info = manifold_muon_direction(W, G, solver="dual_ascent")
    A_fast, fast_info = manifold_muon_direction(W, G, solver="fixed_point")
    assert seed_info["msign_calls"] == 100 and seed_info["residual"] > 1e-4
    assert fast_info["residual"] < 1e-6
    gap_seed = duality_gap(W, G, A_seed, seed_info["multiplier"])["relative_gap"]
    gap_fast = duality_gap(W, G, A_fast, fast_info["multiplier"])["relative_gap"]
    assert gap_fast < 1e-5 < gap_seed


@pytest.mark.parametrize("shape", [(40, 10), (10, 40), (16, 16)])
@pytest.mark.parametrize("eta", [0.01, 0.3, 2.0])
def test_retract_step_is_the_exact_polar_factor(shape, eta):
    W, G = problem(*shape, seed=9)
    A, info = manifold_muon_direction(W, G, solver="certified", tol=1e-10, msign_fn=lambda X: msign(X, method="exact"))
    for gram in (info["gram"], None):  # from the projector AᵀA, or from the series of K = (W − ηA)ᵀ(W − ηA)
        new, used_msign = Stiefel().retract_step(W, A, eta, gram=gram)
        assert used_msign == (gram is None and eta > 1)  # the series needs a small ‖K − I‖
        assert torch.allclose(new, msign(W - eta * A, method="exact"), atol=1e-8)
        assert Stiefel().violation(new) < (1e-12 if gram is not None else 1e-10)  # series error ‖E‖⁵, squared


@pytest.mark.parametrize("eta,fallback", [(1.0, False), (20.0, True)])
def test_retract_step_of_any_tangent_is_the_polar_factor_and_falls_back_to_msign_for_large_steps(eta, fallback):
    W, G = problem(30, 10, seed=10)
    T = Stiefel().tangent(W, G)
    A = 0.5 * T / torch.linalg.matrix_norm(T, ord=2)  # tangent, but singular values 0.5 and below
    new, used_msign = Stiefel(2.0).retract_step(2.0 * W, A, eta)
    assert used_msign == fallback and Stiefel(2.0).violation(new) < 1e-6
    assert torch.allclose(new, 2.0 * msign(2.0 * W - eta * A, method="exact"), atol=1e-6)


@pytest.mark.parametrize("solver", ["newton", "hybrid"])
@pytest.mark.parametrize("shape", [(12, 8), (30, 20), (48, 32), (40, 20), (64, 32), (32, 48)])  # aspect 1.5 to 2
def test_newton_and_hybrid_meet_residual_gap_and_objective_within_1e6(solver, shape):
    W, G = problem(*shape, seed=1)
    A, info = manifold_muon_direction(W, G, solver=solver, tol=1e-7)
    assert_optimal_within_1e6(W, G, A, info)


@pytest.mark.parametrize("shape,seed", [((15, 10), 0), ((13, 10), 0), ((13, 10), 1), ((45, 30), 0)])
def test_newton_solves_optima_that_are_not_partial_isometries(shape, seed):
    """n − (m − n) odd: the optimal A has a singular value < 1, which no polar-form iterate A = msign(G + 2WΛ)
    reaches. The fixed point stalls (its repaired direction is 1e-3..1e-1 from optimal); smoothing Newton
    certifies a feasible direction within 2e-5 (the smoothing floor μ = 1e-8/n leaves O(√μ) there)."""
    W, G = problem(*shape, seed=seed)
    A_fp, fp = manifold_muon_direction(W, G, solver="fixed_point", tol=1e-6)
    A, info = manifold_muon_direction(W, G, solver="newton", tol=1e-6)
    gap_fp = duality_gap(W, G, A_fp, fp["multiplier"])["relative_gap"]
    cert = duality_gap(W, G, A, info["multiplier"])
    assert fp.get("repaired") and gap_fp > 1e-3
    assert cert["relative_gap"] < 2e-5 and tangent_residual(W, A) <= 1e-6
    sv = torch.linalg.svdvals(A)
    assert sv.max() <= 1 + 1e-9 and sv.min() < 0.9  # feasible, and not a partial isometry


@pytest.mark.parametrize("rank", [1, 3])
def test_newton_handles_low_rank_gradients(rank):
    W, _ = problem(40, 10, seed=4)
    g = torch.Generator().manual_seed(5)
    G = torch.randn(40, rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, 10, generator=g, dtype=torch.float64
    )
    A, info = manifold_muon_direction(W, G, solver="newton", tol=1e-6)
    assert torch.isfinite(A).all() and tangent_residual(W, A) <= 1e-6
    assert torch.linalg.matrix_norm(A, ord=2) <= 1 + 1e-9
    # degenerate like the odd case: the smoothing floor leaves ~1e-5 (the repaired fixed point gets 8e-8 at
    # rank 1 and 1.1e-5 at rank 3 here; hybrid takes Newton's certified direction)
    assert duality_gap(W, G, A, info["multiplier"])["relative_gap"] < 2e-5


def test_newton_is_scale_invariant():
    W, G = problem(45, 30, seed=2)
    A1, i1 = manifold_muon_direction(W, G, solver="newton")
    A2, i2 = manifold_muon_direction(W, 1e6 * G, solver="newton")
    assert torch.allclose(A1, A2, atol=1e-8)
    assert torch.allclose(1e6 * i1["multiplier"], i2["multiplier"], rtol=1e-6, atol=1e-6)


def test_hybrid_certifies_aspect_2_where_the_fixed_point_stalls_with_float32_cg():
    """256x128: n = 128 runs Newton's CG in float32 (the line search and certificate stay float64)."""
    W, G = problem(256, 128, seed=1)
    A_fp, fp = manifold_muon_direction(W, G, solver="fixed_point", tol=1e-7)
    A, info = manifold_muon_direction(W, G, solver="certified", tol=1e-7)  # -> hybrid
    assert duality_gap(W, G, A_fp, fp["multiplier"])["relative_gap"] > 1e-5
    cert = duality_gap(W, G, A, info["multiplier"])
    assert info["cg_steps"] > 0 and cert["relative_gap"] <= 1e-6 and tangent_residual(W, A) <= 1e-6
    assert torch.linalg.matrix_norm(A, ord=2) <= 1 + 1e-9


@pytest.mark.parametrize("shape", [(96, 24), (240, 10), (24, 96), (384, 128), (80, 32)])  # aspect 4, 24, 1/4, 3, 2.5
@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_hybrid_goes_straight_to_newton_where_the_complement_gram_iswell_conditioned(shape, scale):
    """λ_min(C) >= 2e-2/n: the hybrid takes Newton at μ = 1e-8/n from the start (its speed against the fixed
    point: ``modman bench solver_iterations``) and its result is optimal."""
    W, G = problem(*shape, seed=1, scale=scale)
    assert well_conditioned(reduced_problem(*tall(W, G))[1])
    A, info = manifold_muon_direction(W, G, solver="hybrid", tol=1e-7)
    assert_optimal_within_1e6(W, G, A, info)
    assert info["cg_steps"] > 0


def test_well_conditioned_test_splits_at_aspect_above_2():

    def conditioned(m, n):
        return well_conditioned(reduced_problem(*problem(m, n, seed=0))[1])

    assert conditioned(1024, 256) and conditioned(384, 128)
    assert not conditioned(256, 128) and not conditioned(192, 128)  # aspect 2 and 1.5: C near singular
    W, G = problem(40, 10, seed=4)
    low_rank = G[:, :3] @ torch.randn(3, 10, dtype=torch.float64)
    assert not well_conditioned(reduced_problem(W, low_rank)[1])


def test_float32_inputs_keep_the_certificate_near_a_singular_m():
    """Near a singular M, A = (G + WX)E must be formed in float64 even for float32 W and G: float32 products
    there cost the returned direction ~10x in duality gap (they are only used where C is well-conditioned)."""
    W, G = problem(256, 128, seed=1, dtype=torch.float32)
    A, info = manifold_muon_direction(W, G, solver="certified", tol=1e-7)
    assert A.dtype == torch.float32 and info["cg_steps"] > 0
    cert = duality_gap(W.double(), G.double(), A.double(), info["multiplier"].double())
    assert cert["relative_gap"] <= 1e-6


def decaying_gradient_problem(m, n, seed, power: float = 1.0):
    """W on Stiefel and a G like a real training gradient: singular values ~ 1/k^power, plus a tangent-ish part."""
    g = torch.Generator().manual_seed(seed)
    W = Stiefel().project(torch.randn(m, n, generator=g, dtype=torch.float64))
    U = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    s = 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** power
    return W, (U * s) @ V.T + 0.3 * s.mean() * W @ torch.randn(n, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1])
def test_hybrid_on_decaying_spectra_takes_newton_after_a_few_fixed_point_steps(seed):
    """Real-like gradients fail the Cholesky test but their dual optimum is regular: the default (5 fixed-point
    steps, then Newton once it halves the residual) certifies the training tolerance, Newton included (its
    iterations against the rule it replaced: ``modman bench solver_iterations``)."""
    W, G = decaying_gradient_problem(256, 64, seed)
    assert not well_conditioned(reduced_problem(W, G)[1])
    A, Lambda, info = hybrid(Problem(W, G, steps=30, tol=1e-4))
    assert info["cg_steps"] > 0 and info["residual"] < 1e-4 and info["gap"] < 1e-4
    assert set(info) == {"msign_calls", "iterations", "residual", "gap", "cg_steps", "gram"}  # no private keys
    assert tangent_residual(W, A) < 1e-4 and duality_gap(W, G, A, Lambda)["relative_gap"] < 1e-4


@pytest.mark.parametrize("seed", [0, 1])
def test_hybrid_goes_to_smoothing_newton_where_the_probe_stalls(seed):
    """Faster-decaying spectra (late in training): the probe stalls near a degenerate optimum, where more
    fixed-point steps bring the residual under the tolerance but not the gap. Straight to smoothing Newton
    (the default) certifies within the step budget (iterations: ``modman bench solver_iterations``)."""
    W, G = decaying_gradient_problem(256, 64, seed, power=2.0)
    A, Lambda, info = hybrid(Problem(W, G, steps=30, tol=1e-4))
    assert info["residual"] < 1e-4 and info["gap"] < 1e-4 and not info.get("repaired")
    assert tangent_residual(W, A) < 1e-4 and duality_gap(W, G, A, Lambda)["relative_gap"] < 1e-4


def spectrum_problem(m, n, seed, spectrum):
    """W on Stiefel and G = U diag(spectrum(k)) Vᵀ with random U, V: a cold-started solve of a real gradient
    (the modular GPT's are like e^(-k/25)/k at 512x128: W's span is unrelated to G's)."""
    g = torch.Generator().manual_seed(seed)
    W = Stiefel().project(torch.randn(m, n, generator=g, dtype=torch.float64))
    U = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    return W, (U * spectrum(torch.arange(1, n + 1, dtype=torch.float64))) @ V.T


@pytest.mark.parametrize("seed", [0, 1])
def test_hybrid_runs_a_second_fixed_point_round_where_the_probe_is_skipped(seed):
    """Cold start, residual 1.5e-2..1.7e-2 after 5 fixed-point steps (probe skipped): 5 more bring it under
    1e-2 and the probe finishes, certified (against one round then smoothing Newton: ``modman bench
    solver_iterations``)."""
    W, G = spectrum_problem(512, 128, seed, lambda k: torch.exp(-k / 25) / k)
    A, Lambda, info = hybrid(Problem(W, G, steps=30, tol=1e-4))
    assert info["residual"] < 1e-4 and info["gap"] < 1e-4 and info["cg_steps"] > 0
    assert tangent_residual(W, A) < 1e-4 and duality_gap(W, G, A, Lambda)["relative_gap"] < 1e-4


@pytest.mark.slow
def test_smoothing_newton_certifies_gaussian_problems_at_1e6():
    """Gaussian 256x128 at tol 1e-6 through every smoothing stage (a stage ends at tol where the certified gap
    is far, so μ shrinks sooner: its iterations are in ``modman bench solver_iterations``): optimal."""
    for seed in [0, 1]:
        W, G = problem(256, 128, seed)
        A, info = manifold_muon_direction(W, G, solver="newton", steps=100, tol=1e-6)
        assert_optimal_within_1e6(W, G, A, info)


def test_smoothing_floor_stops_where_a_larger_mu_certified_a_smaller_gap(monkeypatch):
    """Float32 192x128 (seed 1), aspect 1.5, solved as if its W had exactly orthonormal columns (no
    ``polar_correction``, as for a W off the manifold by more than its limit): M is near singular at the optimum
    and the certified gap ~4.4e-6 at best. At the floor μ = 1e-8/n the first certified gap (8.2e-6) is above one
    a larger μ already certified, so the solve stops and returns that point (after 50 iterations, where running
    the floor's stage out took 60 for gaps 6.6e-6..8.8e-6): the best certified point, not the last."""
    import modman.rules.manifold_muon.reduced as reduced

    monkeypatch.setattr(reduced, "polar_correction", lambda W: None)
    W, G = problem(192, 128, seed=1, dtype=torch.float32)
    A, info = manifold_muon_direction(W, G, solver="hybrid", steps=100, tol=1e-6)
    assert info["iterations"] < 100 and info["gap"] < 5e-6  # stopped at the floor with the best certified point
    W, G, A = W.double(), G.double(), A.double()
    assert duality_gap(W, G, A, info["multiplier"])["relative_gap"] < 1e-5 and tangent_residual(W, A) < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_hybrid_leaves_a_slow_fixed_point_after_one_round(seed):
    """Spectrum e^(-k/8): residual ~3.9e-2 after 5 fixed-point steps, falling ~×0.85 per step to 1e-2 at step
    13. A second round would leave smoothing Newton too few of the 30 iterations (it ends uncertified at the
    cap); going to Newton after the first certifies."""
    W, G = spectrum_problem(512, 128, seed, lambda k: torch.exp(-k / 8))
    A, Lambda, info = hybrid(Problem(W, G, steps=30, tol=1e-4))
    assert not info.get("repaired") and info["residual"] < 1e-4 and info["gap"] < 1e-4
    assert tangent_residual(W, A) < 1e-4 and duality_gap(W, G, A, Lambda)["relative_gap"] < 1e-4


def test_hybrid_rejects_bad_phase_lengths():
    W, G = decaying_gradient_problem(64, 16, 0)
    for bad in ({"direct_after": 0}, {"fixed_point_steps": -1}, {"direct_steps": -2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            hybrid(Problem(W, G, steps=30, tol=1e-4), **bad)


@pytest.mark.parametrize("seed", [0, 1])
def test_newton_probe_stalls_far_from_the_optimum_and_runs_near_it(seed):
    """``min_progress``: from the blog's start Newton's first step does not halve the residual (a stall after
    one iteration); from the fifth fixed-point iterate it converges without stalling."""
    W, G = decaying_gradient_problem(256, 64, seed)
    P, C, _ = reduced_problem(W, G)
    X0 = -0.5 * (P + P.mT)
    far = newton_loop(P, C, X0, 4, 1e-4, mu0=1e-8, min_progress=0.5)
    assert far.stalled and far.iterations == 1
    near = newton_loop(P, C, fixed_point_loop(P, C, X0, 5, 1e-4).X, 4, 1e-4, mu0=1e-8, min_progress=0.5)
    assert not near.stalled and near.residual < 1e-4 and near.gap < 1e-4


def test_fixed_point_resumes_exactly_where_it_stopped():
    """5 iterations then 15 more through ``resume`` (same iterate, same Anderson history) = 20 in one go."""
    W, G = decaying_gradient_problem(256, 64, 0)
    P, C, _ = reduced_problem(W, G)
    X0 = -0.5 * (P + P.mT)
    whole = fixed_point_loop(P, C, X0, 20, 1e-12)
    state: dict = {}
    fixed_point_loop(P, C, X0, 5, 1e-12, resume=state)
    resumed = fixed_point_loop(P, C, state["X"], 15, 1e-12, resume=state)
    assert torch.equal(whole.X, resumed.X) and whole.residual == resumed.residual
    fresh = fixed_point_loop(P, C, fixed_point_loop(P, C, X0, 5, 1e-12).X, 15, 1e-12)
    assert not torch.equal(whole.X, fresh.X)  # restarting from the best iterate, without the history, differs


@pytest.mark.parametrize("fixed_point_steps,direct_steps", [(0, 4), (0, 0), (5, 0)])
def test_hybrid_phases_can_be_switched_off(fixed_point_steps, direct_steps):
    W, G = decaying_gradient_problem(256, 64, 0)
    A, Lambda, info = hybrid(
        Problem(W, G, steps=30, tol=1e-4),
        fixed_point_steps=fixed_point_steps,
        direct_steps=direct_steps,
    )
    assert info["iterations"] <= 30
    assert tangent_residual(W, A) < 1e-4 and duality_gap(W, G, A, Lambda)["relative_gap"] < 1e-4
