"""(c) Optimizer step time on the matrices of one model, side by side in one run.

The parameters are the hidden matrices of a small LLaMA-style stack (per layer: q, k, v, o of d×d,
SwiGLU w1, w3 of 4d×d and w2 of d×4d). Every optimizer steps the same tensors with the same fixed
gradients; the table gives the median step time and its ratio to torch.optim.Muon.

    python -m benchmarks.optimizer_step [--device cuda] [--quick] [--width D] [--layers L] [--interleave N]
                                        [--workers 1,2,4,...]

``--interleave N`` also times torch.optim.Muon, modman's default Muon and ManifoldMuon in turn, N rounds of
steps, three times: the ratios of the medians then see the same machine state on every side. ``--workers`` adds a row of
ManifoldMuon (default solver) per number of concurrent lanes (``ManifoldMuon(workers=W)``).
"""

from __future__ import annotations

import statistics
import time

import torch

from modman.optim import SPEL, Hyperball, HypersphericalDescent, ManifoldMuon, Muon

from .common import finish, lane_counts, parser, sync, timeit


def model_matrices(width: int, layers: int, device: str, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(width, width)] * 4 + [(4 * width, width)] * 2 + [(width, 4 * width)]
    return [torch.randn(*s, generator=g).div_(s[1] ** 0.5).to(device) for _ in range(layers) for s in shapes]


def _not_atomic(opt):
    """The step without its snapshot (``modman.optim.guard.step_atomically``): what atomicity costs."""
    opt.atomic = False
    return opt


OPTIMIZERS = {
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-3),
    "torch.optim.Muon": lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.0),
    "modman Muon (PE 5, auto; default)": lambda ps: Muon(ps, lr=0.02),
    "modman Muon (PE 5, bf16)": lambda ps: Muon(ps, lr=0.02, msign_dtype=torch.bfloat16),
    "modman Muon (PE 5, fp32)": lambda ps: Muon(ps, lr=0.02, msign_dtype=None),
    "modman Muon (PE 5, fp32), atomic=False": lambda ps: _not_atomic(Muon(ps, lr=0.02, msign_dtype=None)),
    "modman Muon (NS 5, bf16)": lambda ps: Muon(ps, lr=0.02, msign_method="newton_schulz", msign_dtype=torch.bfloat16),
    "HypersphericalDescent": lambda ps: HypersphericalDescent(ps, lr=0.1),
    "Hyperball": lambda ps: Hyperball(ps, lr=0.01),
    "SPEL": lambda ps: SPEL(ps, lr=0.05),
    "ManifoldMuon auto": lambda ps: ManifoldMuon(ps, lr=0.05, momentum=0.95, nesterov=True),
    "ManifoldMuon auto, float32 msign": lambda ps: ManifoldMuon(
        ps, lr=0.05, momentum=0.95, nesterov=True, msign_dtype=None
    ),
    "ManifoldMuon certified": lambda ps: ManifoldMuon(ps, lr=0.05, momentum=0.95, nesterov=True, solver="certified"),
    "ManifoldMuon auto, in turn (workers=1)": lambda ps: ManifoldMuon(
        ps, lr=0.05, momentum=0.95, nesterov=True, workers=1
    ),
    "ManifoldMuon auto, atomic=False": lambda ps: _not_atomic(ManifoldMuon(ps, lr=0.05, momentum=0.95, nesterov=True)),
    "ManifoldMuon fixed_point": lambda ps: ManifoldMuon(
        ps, lr=0.05, momentum=0.95, nesterov=True, solver="fixed_point"
    ),
    "ManifoldMuon dual_ascent (blog)": lambda ps: ManifoldMuon(
        ps, lr=0.05, momentum=0.95, nesterov=True, solver="dual_ascent", retraction="msign"
    ),
}


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="N",
        help="also time torch.optim.Muon, modman Muon and ManifoldMuon in turn, N rounds, three times",
    )
    p.add_argument(
        "--workers",
        default="",
        metavar="W,W,...",
        help="also time ManifoldMuon with each number of concurrent lanes (e.g. 1,2,4,8)",
    )
    args = p.parse_args(argv)
    optimizers = dict(OPTIMIZERS)
    for w in lane_counts(p, args.workers):
        optimizers[f"ManifoldMuon auto, workers={w}"] = lambda ps, w=w: ManifoldMuon(
            ps, lr=0.05, momentum=0.95, nesterov=True, workers=w
        )
    width = args.width or (64 if args.quick else 256)
    layers = args.layers or (1 if args.quick else 2)
    base = model_matrices(width, layers, args.device, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    grads = [torch.randn(w.shape, generator=g).to(args.device) for w in base]
    rows = []

    def build(make):
        params = [torch.nn.Parameter(w.clone()) for w in base]
        opt = make(params)
        for prm, grad in zip(params, grads):
            prm.grad = grad.clone()
        return opt

    for name, make in optimizers.items():
        opt = build(make)
        repeat = 1 if "dual_ascent" in name else 5
        seconds = timeit(opt.step, args.device, repeat=repeat, warmup=1)
        diag = opt.diagnostics() if hasattr(opt, "diagnostics") else {}
        calls = sum(d.get("msign_calls", 0) for d in diag.values()) if diag else None
        rows.append({"optimizer": name, "ms_per_step": 1000 * seconds, "msign_calls_per_step": calls})
    ref = next(r["ms_per_step"] for r in rows if r["optimizer"] == "torch.optim.Muon")
    for r in rows:
        r["vs_torch_muon"] = r["ms_per_step"] / ref
    pairs = interleaved(build, args.interleave, args.device) if args.interleave else []
    finish(
        "optimizer_step",
        args,
        rows,
        ["optimizer", "ms_per_step", "vs_torch_muon", "msign_calls_per_step"],
        extra={"width": width, "layers": layers, "shapes": [list(w.shape) for w in base], "interleaved": pairs},
    )


INTERLEAVED = ("torch.optim.Muon", "modman Muon (PE 5, auto; default)", "ManifoldMuon auto")


def interleaved(build, n: int, device: str) -> list[dict]:
    """torch.optim.Muon, modman Muon and ManifoldMuon (defaults) stepped in turn, n times, three rounds: the
    medians and their ratios to torch.optim.Muon."""
    opts = [build(OPTIMIZERS[name]) for name in INTERLEAVED]
    for opt in opts:
        opt.step()  # ManifoldMuon's first step is certified; from the second on it tracks
    out = []
    for _ in range(3):
        times: list[list[float]] = [[] for _ in opts]
        for _ in range(n):
            for k, opt in enumerate(opts):
                sync(device)
                t0 = time.perf_counter()
                opt.step()
                sync(device)
                times[k].append(time.perf_counter() - t0)
        ms = [1000 * statistics.median(t) for t in times]
        out.append(
            {
                "torch_ms": ms[0],
                "modman_ms": ms[1],
                "ratio": ms[1] / ms[0],
                "manifold_muon_ms": ms[2],
                "manifold_muon_ratio": ms[2] / ms[0],
            }
        )
        print(
            f"interleaved, {n} rounds: torch.optim.Muon {ms[0]:.2f} ms, modman Muon {ms[1]:.2f} ms "
            f"(ratio {ms[1] / ms[0]:.3f}), ManifoldMuon {ms[2]:.2f} ms (ratio {ms[2] / ms[0]:.3f})"
        )
    return out


if __name__ == "__main__":
    main()
