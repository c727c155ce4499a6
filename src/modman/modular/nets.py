"""Ready-made networks built from atoms, bonds and combinators: the blog's CIFAR MLP and a small GPT."""

from __future__ import annotations

from ..errors import UserError
from .atoms import Embed, Linear
from .bonds import GELU, Attention, ReLU, residual
from .module import Module, Tuple

__all__ = ["MLP", "GPT"]


def _label(module: Module, labels: tuple[str, ...]) -> Module:
    """Give every atom of ``module`` a readable label (``block0.attention.q``), in ``parameters()`` order."""
    for (atom, _), label in zip(module.budgets(), labels, strict=True):
        atom.label = label
    return module


def MLP(
    widths: tuple[int, ...] = (3072, 128, 64, 10),
    *,
    output_scale: float = 1.0,
    seed: int | None = None,
    tol: float = 1e-6,
    steps: int | None = None,
) -> Module:
    """Bias-free ``Linear @ ReLU @ ... @ Linear`` through ``widths`` (the blog's CIFAR-10 MLP by default).

    Its logits have RMS ≤ 1; ``output_scale`` (a ``Mul`` bond, counted in the norm) lets them grow.
    """
    if len(widths) < 2 or not all(isinstance(w, int) and w >= 1 for w in widths):
        raise UserError(f"MLP: widths must be two or more integers >= 1; got {widths!r}")
    net: Module | None = None
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layer = Linear(fan_in, fan_out, seed=None if seed is None else seed + i, tol=tol, steps=steps)
        net = layer if net is None else layer @ ReLU() @ net
    assert net is not None  # widths has two or more entries
    net = _label(net, tuple(f"layer{i}" for i in range(len(widths) - 1)))
    return net if output_scale == 1.0 else output_scale * net


def GPT(
    vocab_size: int = 256,
    dim: int = 128,
    num_heads: int = 4,
    num_blocks: int = 4,
    *,
    ffn_mult: int = 4,
    alpha: float | None = None,
    output_scale: float = 8.0,
    seed: int | None = None,
    tol: float = 1e-6,
    steps: int | None = None,
) -> Module:
    """``output_scale * head @ (mlp_block @ attention_block) ** L @ embed``: token ids (B, T) → logits (B, T, vocab).

    attention_block = ``residual(Linear_o @ Attention @ (Linear_q, Linear_k, Linear_v), α)``,
    mlp_block = ``residual(Linear(4d→d) @ GELU @ Linear(d→4d), α)``; α = 1/num_blocks by default. No norm
    layers are needed: every atom keeps activations in the unit RMS ball. The head's logits have RMS ≤ 1, too
    flat for a softmax over bytes; ``output_scale`` (a ``Mul`` bond, counted in the norm like any other) lets
    them sharpen — 8 trains as well as AdamW on the byte corpus in a short test. ``tol``/``steps``: the manifold
    Muon solver's, for every Linear.
    """
    for name, v in (
        ("vocab_size", vocab_size),
        ("dim", dim),
        ("num_heads", num_heads),
        ("num_blocks", num_blocks),
        ("ffn_mult", ffn_mult),
    ):
        if not isinstance(v, int) or v < 1:
            raise UserError(f"GPT: {name} must be an integer >= 1; got {v!r}")
    if dim % num_heads:
        raise UserError(f"GPT: dim={dim} must be divisible by num_heads={num_heads}")
    alpha = 1.0 / num_blocks if alpha is None else alpha
    count = iter(range(10**6))

    def lin(i, o):
        return Linear(i, o, seed=None if seed is None else seed + next(count), tol=tol, steps=steps)

    def block(i: int) -> Module:
        attn = _label(
            lin(dim, dim) @ Attention(num_heads) @ Tuple(lin(dim, dim), lin(dim, dim), lin(dim, dim)),
            tuple(f"block{i}.attention.{n}" for n in "qkvo"),
        )
        mlp = _label(
            lin(ffn_mult * dim, dim) @ GELU() @ lin(dim, ffn_mult * dim), (f"block{i}.ffn.up", f"block{i}.ffn.down")
        )
        return residual(mlp, alpha) @ residual(attn, alpha)

    body = block(0)
    for i in range(1, num_blocks):
        body = block(i) @ body
    embed = _label(Embed(vocab_size, dim, seed=None if seed is None else seed + next(count)), ("embed",))
    return output_scale * _label(lin(dim, vocab_size), ("head",)) @ body @ embed
