"""(i) End-to-end training speed: tokens/s of manifold Muon and the modular experiment against muon_all.

Each row trains ``modman train --exp EXP --solver SOLVER`` from scratch for ``--steps`` steps (preset
``small``, the README's runs) and reads tokens/s from its summary; ``vs_muon_all`` is the ratio to muon_all's
tokens/s in the same round. Rounds (``--rounds``) run every row in turn again, so each ratio sees the same
machine state on both sides; the table gives the medians over rounds. One untimed step of every row comes
first (data, kernels, one-time costs).

    python -m benchmarks.train_speed [--device cuda] [--quick] [--steps N] [--rounds R]
                                     [--runs muon_all:auto,manifold_muon:auto,...]
"""

from __future__ import annotations

import statistics
import tempfile

from modman.experiments.llm.config import TrainConfig
from modman.experiments.llm.train import train
from modman.rules.manifold_muon import SOLVER_NAMES

from .common import finish, parser

RUNS = "muon_all:auto,manifold_muon:auto,manifold_muon:certified,modular:auto,modular:certified"


def parse_runs(p, text: str) -> list[tuple[str, str]]:
    """``EXP:SOLVER,...`` (SOLVER one of the manifold Muon solver names), muon_all first (the reference)."""
    runs = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        exp, _, solver = item.partition(":")
        if solver not in SOLVER_NAMES:
            p.error(f"--runs {item!r}: give EXP:SOLVER with SOLVER one of {', '.join(SOLVER_NAMES)}")
        runs.append((exp, solver))
    if not runs or runs[0][0] != "muon_all":
        p.error("--runs: start with muon_all:auto, the reference of the ratios")
    return runs


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: 60; 3 with --quick)")
    p.add_argument("--rounds", type=int, default=2, help="times every row is run, in turn (default: %(default)s)")
    p.add_argument("--runs", default=RUNS, help="EXP:SOLVER rows, muon_all first (default: %(default)s)")
    p.add_argument("--preset", default="small", help="model preset (default: %(default)s; tiny with --quick)")
    args = p.parse_args(argv)
    steps = args.steps or (3 if args.quick else 60)
    if steps < 1 or args.rounds < 1:
        p.error("--steps and --rounds must be >= 1")
    preset = "tiny" if args.quick else args.preset
    runs = parse_runs(p, args.runs)
    for exp, solver in runs:
        run(exp, solver, 1, preset, args)  # untimed
    seen: dict[tuple[str, str], list[dict]] = {r: [] for r in runs}
    for _ in range(args.rounds):
        for r in runs:
            seen[r].append(run(*r, steps, preset, args))
    rows = []
    for (exp, solver), summaries in seen.items():
        ratios = [s["tokens_per_sec"] / ref["tokens_per_sec"] for s, ref in zip(summaries, seen[runs[0]])]
        rows.append(
            {
                "exp": exp,
                "solver": solver,
                "steps": steps,
                "tokens_per_sec": statistics.median(s["tokens_per_sec"] for s in summaries),
                "vs_muon_all": statistics.median(ratios),
                "final_train_loss": summaries[-1]["final_train_loss"],
            }
        )
    finish(
        "train_speed",
        args,
        rows,
        ["exp", "solver", "steps", "tokens_per_sec", "vs_muon_all", "final_train_loss"],
        extra={"preset": preset, "rounds": args.rounds},
    )


def run(exp: str, solver: str, steps: int, preset: str, args) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            exp=exp,
            solver=solver,
            preset=preset,
            max_steps=steps,
            device=args.device,
            out=out,
            seed=args.seed,
            progress=False,
            checkpoint_every=10**9,
            eval_every=steps,
        )
        return train(cfg)


if __name__ == "__main__":
    main()
