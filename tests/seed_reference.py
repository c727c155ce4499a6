"""The modular-manifolds blog's reference code (seed 003), verbatim apart from packaging, used as an oracle.

Copyright (c) 2025 Thinking Machines Lab, MIT License (https://thinkingmachines.ai/blog/modular-manifolds).
``msign`` is parameterised only by its compute dtype so tests can run it in float32 as well as the
original bfloat16; every other line is the seed's.
"""

import math

import torch

ABC_LIST: list[tuple[float, float, float]] = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]

ABC_LIST_STABLE: list[tuple[float, float, float]] = [
    (a / 1.01, b / 1.01**3, c / 1.01**5) for (a, b, c) in ABC_LIST[:-1]
] + [ABC_LIST[-1]]


@torch.no_grad()
def msign(G: torch.Tensor, steps: int = 10, compute_dtype=torch.bfloat16) -> torch.Tensor:
    assert G.ndim >= 2
    should_transpose: bool = G.size(-2) > G.size(-1)
    x = G.to(compute_dtype)
    if should_transpose:
        x = x.mT
    x /= x.norm(dim=(-2, -1), keepdim=True) * 1.01
    for step in range(steps):
        a, b, c = ABC_LIST_STABLE[step] if step < len(ABC_LIST_STABLE) else ABC_LIST_STABLE[-1]
        s = x @ x.mT
        y = c * s
        y.diagonal(dim1=-2, dim2=-1).add_(b)
        y = y @ s
        y.diagonal(dim1=-2, dim2=-1).add_(a)
        x = y @ x
    if should_transpose:
        x = x.mT
    x = torch.nan_to_num(x)
    return x.float()


@torch.no_grad()
def hyperspherical_descent(W, G, eta=0.1):
    w = W.flatten()
    g = G.flatten()
    a = g - w * torch.dot(w, g)
    a /= a.norm() + 1e-12
    new_w = w - eta * a
    new_w /= new_w.norm()
    return new_w.reshape(W.shape)


@torch.no_grad()
def manifold_muon(W, G, eta=0.1, alpha=0.01, steps=100, tol=1e-6, msign_dtype=torch.bfloat16):
    should_tranpose = W.shape[0] < W.shape[1]
    if should_tranpose:
        W = W.T
        G = G.T
    Lambda = -0.25 * (W.T @ G + G.T @ W)
    for step in range(steps):
        A = msign(G + 2 * W @ Lambda, compute_dtype=msign_dtype)
        H = W.T @ A + A.T @ W
        if torch.norm(H) / math.sqrt(H.numel()) < tol:
            break
        Lambda -= alpha * (1 - step / steps) * H
    new_W = W - eta * A
    new_W = msign(new_W, compute_dtype=msign_dtype)
    return new_W.T if should_tranpose else new_W
