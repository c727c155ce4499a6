"""(k) The constrained-Muon family's step time against modman's Muon, interleaved in one run.

Benchmark (c)'s matrices (per layer q, k, v, o of d×d, w1, w3 of 4d×d, w2 of d×4d) and fixed gradients. Every
optimizer is stepped once (first steps do one-time work), then all of them in turn, N rounds, three times; the
table gives each one's median step time and its ratio to modman ``Muon`` measured in the same rounds.

    python -m benchmarks.constrained_step [--device cuda] [--quick] [--width D] [--layers L] [--rounds N]
"""

from __future__ import annotations

import statistics
import time

import torch

from modman.optim import SPEL, Hyperball, Muon, SpectralSphere

from .common import finish, parser, sync
from .optimizer_step import model_matrices

OPTIMIZERS = {
    "modman Muon": lambda ps: Muon(ps, lr=0.02),
    "Hyperball": lambda ps: Hyperball(ps, lr=0.01),
    "SpectralSphere (default: 16 Lanczos steps)": lambda ps: SpectralSphere(ps, lr=0.02),
    "SpectralSphere, 4 Lanczos steps": lambda ps: SpectralSphere(ps, lr=0.02, lanczos_steps=4),
    "SpectralSphere, exact eigh": lambda ps: SpectralSphere(ps, lr=0.02, lanczos_steps=None),
    "SpectralSphere SSO (default: 1 eval, 48 Lanczos steps)": lambda ps: SpectralSphere(ps, lr=0.02, tangent=True),
    "SpectralSphere SSO, exact eigh": lambda ps: SpectralSphere(ps, lr=0.02, tangent=True, lanczos_steps=None),
    "SpectralSphere SSO, 2 evals": lambda ps: SpectralSphere(ps, lr=0.02, tangent=True, sso_evals=2),
    "SPEL": lambda ps: SPEL(ps, lr=0.05),
}


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None, help="steps of each optimizer per round (3 rounds)")
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
        rows.append({"optimizer": name, "ms_per_step": statistics.median(times[name]),
                     "vs_modman_muon": statistics.median(ratios), "ratio_range": f"{min(ratios):.2f}-{max(ratios):.2f}",
                     "msign_calls_per_step": calls})
    finish("constrained_step", args, rows, ["optimizer", "ms_per_step", "vs_modman_muon", "ratio_range",
                                            "msign_calls_per_step"],
           extra={"width": width, "layers": layers, "rounds": rounds, "shapes": [list(w.shape) for w in base]})


if __name__ == "__main__":
    main()
