"""The matrix sign function: the polar factor ``U Vᵀ`` of ``G = U Σ Vᵀ``.

``msign(G) = U sign(Σ) Vᵀ``: every non-zero singular value is snapped to one and zero singular values
stay zero (so ``msign(0) == 0``). It is the steepest-descent direction under the spectral norm (Muon),
the retraction onto the Stiefel manifold and the inner step of manifold Muon's dual solver.

Three methods:

* ``"polar_express"`` — odd quintic polynomials with one coefficient triple per step, from
  Amsel, Persson, Musco & Gower, *The Polar Express* (arXiv:2505.16932), as listed in the modular
  manifolds blog's reference code (``msign.py``), with its 1.01 safety factor.
* ``"newton_schulz"`` — Muon's fixed quintic (3.4445, −4.7750, 2.0315) from Keller Jordan's Muon; it
  does not converge to ``U Vᵀ``: singular values end up spread over roughly [0.7, 1.2].
* ``"exact"`` — float64 SVD; singular values below a rank tolerance count as zero.
"""

from __future__ import annotations

import functools

import torch

from .errors import UserError

__all__ = [
    "msign",
    "fast_bfloat16",
    "unit_scaled",
    "times_power_of_two",
    "METHODS",
    "DEFAULT_STEPS",
    "POLAR_EXPRESS_COEFFICIENTS",
    "NEWTON_SCHULZ_COEFFICIENTS",
]

# Polar Express, degree-5 polynomials optimised for singular values in [1e-3, 1] (the blog's reference code,
# msign.py; arXiv:2505.16932). The last triple is the classical quintic 15/8, -10/8, 3/8 it converges to.
POLAR_EXPRESS_COEFFICIENTS: tuple[tuple[float, float, float], ...] = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
_SAFETY = 1.01
# The seed divides every polynomial but the last by the safety factor (p(x/1.01) scaled back), so that
# rounding cannot push a singular value past the polynomial's stable range.
_POLAR_EXPRESS_STABLE = tuple(
    (a / _SAFETY, b / _SAFETY**3, c / _SAFETY**5) for (a, b, c) in POLAR_EXPRESS_COEFFICIENTS[:-1]
) + (POLAR_EXPRESS_COEFFICIENTS[-1],)

# Keller Jordan's Muon quintic, also torch.optim.Muon's default.
NEWTON_SCHULZ_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)

METHODS = ("polar_express", "newton_schulz", "exact")
DEFAULT_STEPS = {"polar_express": 10, "newton_schulz": 5, "exact": 0}


@torch.no_grad()
def msign(
    G: torch.Tensor,
    *,
    steps: int | None = None,
    method: str = "polar_express",
    dtype: torch.dtype | str | None = None,
) -> torch.Tensor:
    """Polar factor ``msign(G) = U sign(Σ) Vᵀ`` of a matrix or a batch of matrices.

    Args:
        G: tensor of shape ``(..., m, n)``; tall, wide or square; leading dims are a batch.
        steps: polynomial iterations (default 10 for Polar Express, 5 for Newton–Schulz; ignored by
            ``"exact"``). Polar Express steps past the table repeat its last polynomial.
        method: ``"polar_express"``, ``"newton_schulz"`` or ``"exact"``.
        dtype: compute dtype of the iterative methods. Default float32 (float64 when G is float64);
            ``torch.bfloat16`` reproduces the blog's half-precision iteration; ``"auto"`` is bfloat16 where
            G's device multiplies it natively (``fast_bfloat16``), else the default.

    Returns:
        A new tensor of G's shape, dtype and device. ``G`` itself is never written.
    """
    if not isinstance(G, torch.Tensor) or G.ndim < 2:
        shape = tuple(G.shape) if isinstance(G, torch.Tensor) else type(G).__name__
        raise UserError(f"msign needs a tensor with >= 2 dims (..., m, n); got {shape}")
    if not G.is_floating_point():
        raise TypeError(
            f"msign needs a real floating-point tensor; got dtype {G.dtype}. Convert it first, e.g. G.float()"
        )
    if method not in METHODS:
        raise UserError(f"msign: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if steps is None:
        steps = DEFAULT_STEPS[method]
    if not isinstance(steps, int) or steps < 0:
        raise UserError(f"msign: steps must be an int >= 0; got {steps!r}")
    if not (dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype)):
        raise UserError(f"msign: dtype must be a torch dtype, None or 'auto'; got {dtype!r}")
    if G.numel() == 0:
        return torch.zeros_like(G)
    if method == "exact":
        return _msign_exact(G).to(G.dtype)
    if isinstance(dtype, str):  # "auto"
        dtype = torch.bfloat16 if fast_bfloat16(G.device) else None
    if dtype is None:
        dtype = torch.float64 if G.dtype == torch.float64 else torch.float32
    wide = G.size(-2) <= G.size(-1)
    # Iterate on the wide orientation so that the Gram matrix X Xᵀ is the small one. msign is invariant to
    # G's scale: an exact power-of-two rescaling first keeps the norm below from under- or overflowing.
    X = unit_scaled(G if wide else G.mT).to(dtype)
    norm = X.norm(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    if method == "polar_express":
        X = X / (norm * _SAFETY)
        for k in range(steps):
            X = _odd_quintic(X, *_POLAR_EXPRESS_STABLE[min(k, len(_POLAR_EXPRESS_STABLE) - 1)])
    else:
        X = X / norm
        for _ in range(steps):
            X = _odd_quintic(X, *NEWTON_SCHULZ_COEFFICIENTS)
    X = X if wide else X.mT
    return X.to(G.dtype)


def unit_scaled(X: torch.Tensor, dim: int | tuple[int, ...] = (-2, -1), *, return_exponent: bool = False):
    """``X / 2^e`` with ``2^(e-1) <= max|X| < 2^e`` over ``dim`` (each matrix by default): exact, since only
    exponents change, and safe to square and sum. Zero slices stay zero; half precision is widened to float32.

    Every direction modman computes (msign, manifold Muon, the sphere's tangent) is invariant to a positive
    scaling of the gradient, so this puts a gradient of any finite size (1e-30 or 1e30) in range first.
    With ``return_exponent`` also returns e (an int tensor broadcasting against X; ``times_power_of_two``
    undoes the scaling).
    """
    if X.dtype not in (torch.float64, torch.float32):
        X = X.to(torch.float32)
    amax = X.abs().amax(dim=dim, keepdim=True) if X.numel() else X.new_zeros(())
    exponent = torch.frexp(amax).exponent  # amax = m·2^e with m in [0.5, 1); e = 0 for a zero slice
    scaled = times_power_of_two(X, -exponent)
    return (scaled, exponent) if return_exponent else scaled


def times_power_of_two(X: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """``X · 2^exponent``, exact, in two half-steps: 2^e alone can overflow (e = 148 for float32 subnormals)."""
    wide = X.dtype if X.dtype in (torch.float32, torch.float64) else torch.float32
    half = torch.div(exponent, 2, rounding_mode="floor")
    # Products with exact powers of two (torch.ldexp computes the same ~40x slower on the CPU).
    return (X.to(wide) * torch.exp2(half.to(wide)) * torch.exp2((exponent - half).to(wide))).to(X.dtype)


def fast_bfloat16(device: torch.device | str) -> bool:
    """Whether bfloat16 matrix products on ``device`` run natively (faster than float32).

    True on accelerators. On the CPU only where oneDNN takes bfloat16 matmuls (AVX-512 or AMX on x86, BF16
    on Arm), while ``torch.backends.mkldnn`` is enabled: elsewhere torch falls back to a scalar kernel,
    much slower than float32 (BENCHMARKS.md (c) on an AVX2 CPU), so ``dtype="auto"`` stays in float32 there.
    """
    device = torch.device(device)
    return device.type != "cpu" or bool(getattr(torch.backends.mkldnn, "enabled", True)) and _cpu_bfloat16_matmul()


@functools.lru_cache(maxsize=1)
def _cpu_bfloat16_matmul() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the probe: assume the slow kernel
        return False


def _odd_quintic(X: torch.Tensor, a: float, b: float, c: float) -> torch.Tensor:
    """One step ``X ← aX + (bS + cS²)X`` with ``S = X Xᵀ``, in torch.optim.Muon's fused order: each ``addmm``
    (``baddbmm`` for a batch) adds in the product's accumulator, so bfloat16 rounds once per product."""
    S = X @ X.mT
    if X.ndim == 2:
        B = torch.addmm(S, S, S, beta=b, alpha=c)
        return torch.addmm(X, B, X, beta=a)
    batch = X.shape[:-2]
    X3, S3 = X.reshape(-1, *X.shape[-2:]), S.reshape(-1, *S.shape[-2:])
    B = torch.baddbmm(S3, S3, S3, beta=b, alpha=c)
    return torch.baddbmm(X3, B, X3, beta=a).reshape(*batch, *X.shape[-2:])


def _msign_exact(G: torch.Tensor) -> torch.Tensor:
    """Float64 SVD polar factor; singular values under ``max(m, n)·eps·σ_max`` are treated as zero."""
    G64 = G.to(torch.float64)
    U, S, Vh = torch.linalg.svd(G64, full_matrices=False)
    tol = max(G.shape[-2:]) * torch.finfo(torch.float64).eps * S.amax(dim=-1, keepdim=True)
    keep = (S > tol).to(torch.float64)
    return (U * keep.unsqueeze(-2)) @ Vh
