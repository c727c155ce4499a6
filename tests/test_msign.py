"""msign against the float64 SVD polar factor, per method, step count, shape and dtype."""

import importlib

import pytest
import seed_reference
import torch
from hypothesis import given
from hypothesis import strategies as st

from modman import msign
from modman.msign import NEWTON_SCHULZ_COEFFICIENTS, POLAR_EXPRESS_COEFFICIENTS

msign_module = importlib.import_module("modman.msign")  # the package's ``msign`` attribute is the function


def gaussian(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def polar64(G):
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return U @ Vh


def op_norm(X):
    return torch.linalg.matrix_norm(X.double(), ord=2).max().item()


def predicted_singular_values(G, method, steps):
    """Run the scalar polynomial iteration on G's normalised singular values, in float64."""
    s = torch.linalg.svdvals(G.double())
    fro = torch.linalg.vector_norm(G.double(), dim=(-2, -1), keepdim=True).squeeze(-1)
    if method == "polar_express":
        x = s / (fro * 1.01)
        table = [(a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in POLAR_EXPRESS_COEFFICIENTS[:-1]]
        table.append(POLAR_EXPRESS_COEFFICIENTS[-1])
        coeffs = [table[min(k, len(table) - 1)] for k in range(steps)]
    else:
        x = s / fro
        coeffs = [NEWTON_SCHULZ_COEFFICIENTS] * steps
    for a, b, c in coeffs:
        x = a * x + b * x**3 + c * x**5
    return x


SHAPES = [(64, 64), (96, 40), (40, 96), (3, 48, 24), (2, 2, 20, 33), (1, 1), (5, 1), (1, 7)]


@pytest.mark.parametrize("method", ["polar_express", "newton_schulz"])
@pytest.mark.parametrize("steps", [1, 3, 5, 8, 10, 12])
@pytest.mark.parametrize("shape", SHAPES)
def test_iteration_matches_scalar_polynomials_on_singular_values(method, steps, shape):
    """X = U f(Σ) Vᵀ with f the composed per-step polynomials: checks coefficients and step count."""
    G = gaussian(*shape, seed=steps)
    X = msign(G, method=method, steps=steps).double()
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    core = U.mT @ X @ Vh.mT  # should be diag(f(σ))
    f = predicted_singular_values(G, method, steps)
    diag = torch.diagonal(core, dim1=-2, dim2=-1)
    assert torch.allclose(diag, f, atol=2e-5, rtol=1e-4), (diag - f).abs().max()
    off = core - torch.diag_embed(diag)
    assert off.abs().max() < 2e-5


@pytest.mark.parametrize("shape", [(256, 64), (64, 256), (512, 128), (4, 96, 32)])
def test_polar_express_float32_10_steps_within_1e5_on_well_conditioned(shape):
    G = gaussian(*shape, seed=1)
    err = op_norm(msign(G, steps=10) - polar64(G))
    assert err <= 1e-5, err


def test_polar_express_converges_on_ill_conditioned_square_with_enough_steps():
    G = gaussian(128, 128, seed=2)
    assert op_norm(msign(G, steps=6) - polar64(G)) > 1e-2  # not yet: σ_min/‖G‖_F is below 1e-3
    assert op_norm(msign(G, steps=12) - polar64(G)) <= 1e-5


def test_newton_schulz_leaves_singular_values_in_muon_band():
    G = gaussian(256, 64, seed=3)
    s = torch.linalg.svdvals(msign(G, method="newton_schulz").double())
    assert 0.6 < s.min() and s.max() < 1.25
    assert s.max() - s.min() > 0.2  # it does not converge to the polar factor


@pytest.mark.parametrize("shape", [(200, 50), (50, 200), (80, 80)])
def test_exact_matches_svd_to_1e12(shape):
    G = gaussian(*shape, seed=4, dtype=torch.float64)
    assert op_norm(msign(G, method="exact") - polar64(G)) < 1e-12


@pytest.mark.parametrize(
    "method,dtype,atol",
    [
        ("exact", torch.float64, 1e-12),
        ("polar_express", torch.float64, 1e-6),
        # float32 rounding leaves the null space with singular values ~1e-7·‖G‖, which ten
        # Polar Express steps amplify by ~2e4: an inherent floor, not a bug.
        ("polar_express", torch.float32, 2e-3),
    ],
)
@pytest.mark.parametrize("shape,rank", [((60, 40), 10), ((40, 60), 25), ((50, 50), 1)])
def test_rank_deficient_maps_null_space_to_zero(method, dtype, atol, shape, rank):
    m, n = shape
    G = gaussian(m, rank, seed=5).double() @ gaussian(rank, n, seed=6).double()
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    target = U[:, :rank] @ Vh[:rank]
    X = msign(G.to(dtype), method=method)
    assert op_norm(X.double() - target) < atol


@pytest.mark.parametrize("method", ["polar_express", "newton_schulz", "exact"])
def test_zeros_in_zeros_out_without_nan(method):
    G = torch.zeros(3, 20, 10)
    G[1] = gaussian(20, 10, seed=7)
    X = msign(G, method=method)
    assert torch.isfinite(X).all()
    assert torch.equal(X[0], torch.zeros(20, 10)) and torch.equal(X[2], torch.zeros(20, 10))
    assert X[1].abs().max() > 0.1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["polar_express", "newton_schulz", "exact"])
def test_returns_input_dtype_and_leaves_input_untouched(dtype, method):
    G = gaussian(30, 20, seed=8, dtype=dtype)
    before = G.clone()
    X = msign(G, method=method, dtype=torch.bfloat16 if method != "exact" else None)
    assert X.dtype == dtype and X.shape == G.shape
    assert torch.equal(G, before)


def test_bf16_compute_is_the_seeds_iteration_less_noisy_and_less_accurate_than_float32():
    """bfloat16 runs the blog's polynomials with each product rounded once (torch.optim.Muon's addmm order): it
    agrees with the blog's own iteration to bf16 rounding and is at least as close to the exact polar factor."""
    exact_errors, seed_errors = [], []
    for seed in range(6):
        G = gaussian(128, 48, seed=9 + seed)
        ours, theirs = msign(G, dtype=torch.bfloat16), seed_reference.msign(G.clone())
        assert (ours - theirs).abs().max() < 0.05
        exact = msign(G, method="exact")
        exact_errors.append((ours - exact).norm() / exact.norm())
        seed_errors.append((theirs - exact).norm() / exact.norm())
    assert sum(exact_errors) <= sum(seed_errors)

    def stiefel_error(X):
        return (X.double().mT @ X.double() - torch.eye(48, dtype=torch.float64)).abs().max().item()

    assert 1e-3 < stiefel_error(ours) < 3e-2
    assert stiefel_error(msign(G)) < 1e-6


def test_bf16_newton_schulz_is_torch_muons_bit_for_bit():
    """torch.optim.Muon's orthogonalization (bf16, Muon's quintic, 5 steps) and ours agree to the last bit."""
    muon = pytest.importorskip("torch.optim._muon")
    for shape in [(64, 64), (96, 32), (32, 96)]:
        G = gaussian(*shape, seed=sum(shape))
        theirs = muon._zeropower_via_newtonschulz(G, (3.4445, -4.7750, 2.0315), 5, 1e-7)
        assert torch.equal(msign(G, method="newton_schulz", steps=5, dtype=torch.bfloat16), theirs.float()), shape


def test_batched_equals_loop():
    G = gaussian(4, 3, 24, 16, seed=10)
    X = msign(G)
    for i in range(4):
        for j in range(3):
            assert torch.allclose(X[i, j], msign(G[i, j]), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "svd"}, "unknown method"),
        ({"steps": -1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"dtype": "bf16"}, "dtype must be .*'auto'"),
        ({"dtype": 16}, "dtype must be"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        msign(torch.ones(3, 3), **kwargs)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_dtype_is_bfloat16_only_where_the_cpu_multiplies_it_natively(monkeypatch, fast):
    monkeypatch.setattr(msign_module, "_cpu_bfloat16_matmul", lambda: fast)
    G = gaussian(40, 24, seed=11)
    expected = msign(G, dtype=torch.bfloat16 if fast else None)
    assert torch.equal(msign(G, dtype="auto"), expected)
    assert not torch.equal(msign(G, dtype=torch.bfloat16), msign(G))  # the two paths differ: the test can fail
    assert msign_module.fast_bfloat16("cpu") is fast
    assert msign_module.fast_bfloat16("cuda:0") and msign_module.fast_bfloat16(torch.device("mps"))
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # torch then takes the scalar kernel
    assert not msign_module.fast_bfloat16("cpu")


def test_cpu_bfloat16_probe_answers_a_bool():
    assert isinstance(msign_module._cpu_bfloat16_matmul(), bool)


def test_vector_input_raises_with_shape():
    with pytest.raises(ValueError, match=r"\(5,\)"):
        msign(torch.ones(5))


matrices = st.tuples(
    st.integers(0, 2), st.integers(1, 24), st.integers(1, 24), st.integers(-20, 20), st.integers(0, 10**6)
)


def _matrix(batch, m, n, log2_scale, seed):
    shape = (batch, m, n) if batch else (m, n)
    return gaussian(*shape, seed=seed) * 2.0**log2_scale


@given(matrices)
def test_property_power_of_two_scale_invariance_and_oddness(args):
    G = _matrix(*args)
    X = msign(G)
    assert torch.equal(msign(G * 2.0**7), X)  # normalisation by ‖G‖_F is exact for powers of two
    assert torch.equal(msign(-G), -X)


@given(matrices)
def test_property_singular_vectors_kept_and_norm_at_most_one(args):
    G = _matrix(*args)
    X = msign(G).double()
    U, S, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    core = U.mT @ X @ Vh.mT
    diag = torch.diagonal(core, dim1=-2, dim2=-1)
    assert (core - torch.diag_embed(diag)).abs().max() < 1e-4
    assert diag.max() <= 1 + 1e-4 and diag.min() >= -1e-4
    # singular values above Polar Express's design range [1e-3, 1] (after normalisation) converge to 1
    fro = torch.linalg.vector_norm(G.double(), dim=(-2, -1), keepdim=True).squeeze(-1)
    converged = S >= 2e-3 * fro
    assert torch.all((diag[converged] - 1).abs() < 1e-4)


@pytest.mark.slow
@given(st.integers(1, 24), st.integers(1, 24), st.integers(0, 10**6))
def test_property_transpose_commutes(m, n, seed):
    G = gaussian(m, n, seed=seed)
    if m == n:
        assert torch.allclose(msign(G.mT), msign(G).mT, atol=1e-5)
    else:
        assert torch.equal(msign(G.mT), msign(G).mT)


@given(
    exponent=st.integers(-300, 300),
    dtype=st.sampled_from([torch.float64, torch.float32, torch.float16]),
    seed=st.integers(0, 100),
)
def test_times_power_of_two_is_exact_ldexp(exponent, dtype, seed):
    """X·2^e equals the correctly rounded product (torch.ldexp in float64, then X's dtype), subnormal and
    overflowing results included, and unit_scaled undoes to X exactly."""
    X = gaussian(3, 4, seed=seed, dtype=dtype)
    e = torch.full((1, 1), exponent, dtype=torch.int32)
    got = msign_module.times_power_of_two(X, e)
    want = torch.ldexp(X.double(), e).to(dtype) if dtype != torch.float64 else torch.ldexp(X, e)
    assert got.dtype == dtype
    assert torch.equal(got, want)
    scaled, k = msign_module.unit_scaled(X, return_exponent=True)
    assert float(scaled.abs().max()) < 1.0 <= 2 * float(scaled.abs().max())
    assert torch.equal(msign_module.times_power_of_two(scaled, k).to(dtype), X)
