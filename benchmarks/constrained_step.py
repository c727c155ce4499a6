"""(k) The constrained-Muon family's step time against modman's Muon, interleaved in one run; and how far
SpectralSphere's σ_max(W) ends from R with each way of finding σ_max.

Benchmark (c)'s matrices (per layer q, k, v, o of d×d, w1, w3 of 4d×d, w2 of d×4d) and fixed gradients. Every
optimizer is stepped once (first steps do one-time work), then all of them in turn, N rounds, three times; the
table gives each one's median step time and its ratio to modman ``Muon`` measured in the same rounds.

``--accuracy S`` also steps SpectralSphere S times on fresh random gradients (the hard case: the top singular
values cluster and cross) and reports max |σ_max(W)/R − 1| (float64 SVD) over the run, for Lanczos with
16/48 steps, the exact eigendecomposition (SSO's default), and 5 warm-started power iterations (as
microsoft/dion's MuonSphere).

    python -m benchmarks.constrained_step [--device cuda] [--quick] [--width D] [--layers L] [--rounds N]
                                          [--accuracy S]
"""

from __future__ import annotations

import statistics
import time

import torch

import modman.optim.constrained as constrained
from modman.manifolds import SpectralSphere as SphereSet
from modman.optim import SPEL, Hyperball, Muon, SpectralSphere

from .common import finish, parser, sync
from .optimizer_step import model_matrices

OPTIMIZERS = {
    "modman Muon": lambda ps: Muon(ps, lr=0.02),
    "Hyperball": lambda ps: Hyperball(ps, lr=0.01),
    "SpectralSphere (default: 16 Lanczos steps)": lambda ps: SpectralSphere(ps, lr=0.02),
    "SpectralSphere, 4 Lanczos steps": lambda ps: SpectralSphere(ps, lr=0.02, lanczos_steps=4),
    "SpectralSphere, exact eigh": lambda ps: SpectralSphere(ps, lr=0.02, lanczos_steps=None),
    "SpectralSphere SSO (default: 1 eval, exact eigh)": lambda ps: SpectralSphere(ps, lr=0.02, tangent=True),
    "SpectralSphere SSO, 48 Lanczos steps": lambda ps: SpectralSphere(ps, lr=0.02, tangent=True, lanczos_steps=48),
    "SpectralSphere SSO, 2 evals": lambda ps: SpectralSphere(ps, lr=0.02, tangent=True, sso_evals=2),
    "SPEL": lambda ps: SPEL(ps, lr=0.05),
}


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None, help="steps of each optimizer per round (3 rounds)")
    p.add_argument("--accuracy", type=int, default=0, metavar="S", help="also measure σ_max's error over S steps")
    args = p.parse_args(argv)
    width = args.width or (64 if args.quick else 256)
    layers = args.layers or (1 if args.quick else 2)
    rounds = args.rounds or (3 if args.quick else 10)
    base = model_matrices(width, layers, args.device, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    grads = [torch.randn(w.shape, generator=g).to(args.device) for w in base]
    opts = {}
    for name, make in OPTIMIZERS.items():
        params = [torch.nn.Parameter(w.clone()) for w in base]
        opts[name] = make(params)
        for prm, grad in zip(params, grads):
            prm.grad = grad.clone()
        opts[name].step()
    times: dict[str, list[list[float]]] = {name: [] for name in opts}
    for _ in range(3):
        per = {name: [] for name in opts}
        for _ in range(rounds):
            for name, opt in opts.items():
                sync(args.device)
                t0 = time.perf_counter()
                opt.step()
                sync(args.device)
                per[name].append(time.perf_counter() - t0)
        for name in opts:
            times[name].append(1000 * statistics.median(per[name]))
    rows = []
    for name, opt in opts.items():
        ratios = [t / m for t, m in zip(times[name], times["modman Muon"])]
        calls = sum(d.get("msign_calls", 0) for d in opt.diagnostics().values())
        rows.append(
            {
                "optimizer": name,
                "ms_per_step": statistics.median(times[name]),
                "vs_modman_muon": statistics.median(ratios),
                "ratio_range": f"{min(ratios):.2f}-{max(ratios):.2f}",
                "msign_calls_per_step": calls,
            }
        )
    accuracy = sphere_accuracy(args.accuracy, args.device, args.seed) if args.accuracy else []
    for row in accuracy:
        print(row)
    finish(
        "constrained_step",
        args,
        rows,
        ["optimizer", "ms_per_step", "vs_modman_muon", "ratio_range", "msign_calls_per_step"],
        extra={
            "width": width,
            "layers": layers,
            "rounds": rounds,
            "shapes": [list(w.shape) for w in base],
            "accuracy": accuracy,
        },
    )


def power_top(V, x, steps=5):
    """5 power iterations on VᵀV from x (the retraction of dion's MuonSphere), as ``lanczos_top`` returns."""
    A = V if V.shape[-2] >= V.shape[-1] else V.mT
    q = x.unsqueeze(-2)
    for _ in range(steps):
        q = (q @ A.mT) @ A
        q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return ((q @ A.mT).square().sum((-2, -1))), q.squeeze(-2)


def sphere_accuracy(steps: int, device: str, seed: int) -> list[dict]:
    """max |σ_max(W)/R − 1| over ``steps`` random-gradient steps (lr 0.02), checked every 10 steps."""
    shapes = [(256, 128), (128, 256), (192, 192)]
    searches = {"Lanczos, 16 steps": 16, "Lanczos, 48 steps": 48, "exact (eigh)": None, "power iteration, 5 steps": 5}
    out = []
    for tangent in (False, True):
        for name, k in searches.items():
            torch.manual_seed(seed)
            ps = [torch.nn.Parameter(torch.randn(*s, device=device)) for s in shapes]
            real = constrained.lanczos_top
            if name.startswith("power"):
                constrained.lanczos_top = lambda V, x, _k: power_top(V, x)
            try:
                opt = SpectralSphere(ps, lr=0.02, tangent=tangent, lanczos_steps=k)
                worst = 0.0
                for step in range(steps):
                    for prm in ps:
                        prm.grad = torch.randn_like(prm)
                    opt.step()
                    if step % 10 == 9:
                        worst = max(
                            [worst] + [SphereSet((q.shape[0] / q.shape[1]) ** 0.5).violation(q.detach()) for q in ps]
                        )
            finally:
                constrained.lanczos_top = real
            out.append(
                {
                    "variant": "SSO" if tangent else "retraction only",
                    "sigma_max_search": name,
                    "steps": steps,
                    "max_violation": worst,
                }
            )
    return out


if __name__ == "__main__":
    main()
