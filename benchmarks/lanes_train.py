"""(d) Concurrent lanes end to end: ``modman train`` with the optimizers' ``workers`` set to each value.

ManifoldMuon (``--exp manifold_muon``) and ModularDescent (``--exp modular``) solve their matrices' directions
in ``workers`` concurrent lanes (``modman.optim.concurrent``: a thread and a CUDA stream each). Each row
trains the same run from scratch with ``workers`` set for every optimizer built; the losses must agree
to the bit (the lanes change only the time): ``same_losses`` compares each row's with the first row's of its
experiment, exactly. An untimed one-step run of each experiment comes first.

    python -m benchmarks.lanes_train [--device cuda] [--quick] [--exp manifold_muon,modular] [--steps N]
                                     [--workers 1,4]
"""

from __future__ import annotations

import tempfile
import time
from unittest import mock

from modman.experiments.llm.config import TrainConfig
from modman.experiments.llm.train import train
from modman.modular import ModularDescent
from modman.optim import ManifoldMuon

from .common import finish, lane_counts, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--exp", default="manifold_muon,modular", help="experiments (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: 40; 3 with --quick)")
    p.add_argument("--workers", default="1,4", help="lanes per run, comma-separated (default: %(default)s)")
    args = p.parse_args(argv)
    lanes = lane_counts(p, args.workers)
    if not lanes:
        p.error("--workers: give at least one number of lanes, e.g. 1,4")
    steps = args.steps or (3 if args.quick else 40)
    if steps < 1:
        p.error(f"--steps {steps}: must be >= 1")
    rows = []
    for exp in [e.strip() for e in args.exp.split(",") if e.strip()]:
        run(exp, 1, lanes[0], args)  # untimed: one-time costs (data, CUDA context, kernels) off the first row
        for workers in lanes:
            seconds, summary = run(exp, steps, workers, args)
            losses = (summary["final_train_loss"], summary["final_val_loss"])
            first = next((r for r in rows if r["exp"] == exp), None)
            rows.append(
                {
                    "exp": exp,
                    "workers": workers,
                    "steps": steps,
                    "seconds": seconds,
                    "final_train_loss": losses[0],
                    "final_val_loss": losses[1],
                    "same_losses": first is None or (first["final_train_loss"], first["final_val_loss"]) == losses,
                }
            )
    finish(
        "lanes_train",
        args,
        rows,
        ["exp", "workers", "steps", "seconds", "final_train_loss", "final_val_loss", "same_losses"],
    )


def run(exp: str, steps: int, workers: int, args) -> tuple[float, dict]:
    """Train ``exp`` from scratch for ``steps`` with every ManifoldMuon / ModularDescent built at ``workers``."""
    with (
        tempfile.TemporaryDirectory() as out,
        mock.patch.dict(ManifoldMuon.__init__.__kwdefaults__, workers=workers),
        mock.patch.dict(ModularDescent.__init__.__kwdefaults__, workers=workers),
    ):
        cfg = TrainConfig(
            exp=exp,
            max_steps=steps,
            device=args.device,
            out=out,
            seed=args.seed,
            progress=False,
            checkpoint_every=10**9,
            eval_every=steps,
        )
        t0 = time.perf_counter()
        summary = train(cfg)
        return time.perf_counter() - t0, summary


if __name__ == "__main__":
    main()
