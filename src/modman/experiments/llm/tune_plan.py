"""The plan of ``modman tune`` as pure functions of the ended runs' final val losses.

Per experiment, exponents ``k`` of lr multipliers ``2^k``:

1. *grid*: ``points`` exponents around 0 with the first seed; while the best (lowest final val loss, a diverged
   run counting as infinitely bad) is on an edge, one more beyond it, up to ``max_extend`` a side;
2. *seeds*: every seed at the grid's best exponent and its two neighbours — and, when the mean over the seeds
   prefers a neighbour, at that one's neighbours too, so the chosen exponent is seeded on both sides;
3. *no-decay* (the experiments of ``no_decay``): every seed at the best seeded exponent with weight decay 0;
4. the *chosen setting* — lowest mean over every seed among the fully seeded settings, the rule the report
   uses to pick an experiment's best — is what the tune's timed phase trains again for its seconds.
"""

from __future__ import annotations

import dataclasses
import math

from ...errors import UserError
from .recipes import TRAIN_EXPERIMENTS

__all__ = [
    "TuneSpec",
    "knob",
    "run_name",
    "selection_grid",
    "best_exponent",
    "plan",
    "seeded_mean",
    "seeded_best",
    "chosen",
]

Losses = dict[tuple[int, int], float]  # (k, seed) -> final val loss, inf where the run diverged


@dataclasses.dataclass(frozen=True)
class TuneSpec:
    """What a tune does: the experiments, its seeds, the initial grid size, how far it may extend, and the
    experiments that also run without weight decay at their best lr (the LLM experiment plan's H5)."""

    exps: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    points: int = 5
    max_extend: int = 3
    no_decay: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = [e for e in self.exps if e not in TRAIN_EXPERIMENTS]
        if unknown:
            raise UserError(
                f"--exp: unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(TRAIN_EXPERIMENTS)}"
            )
        if not self.exps or not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError("modman tune needs at least one experiment and distinct --seeds, e.g. --seeds 0,1,2")
        if self.points < 3:
            raise UserError(f"--points must be >= 3 (a best point needs a neighbour on each side); got {self.points}")
        if self.max_extend < 0:
            raise UserError(f"--max-extend must be >= 0; got {self.max_extend}")
        stray = [e for e in self.no_decay if e not in self.exps]
        if stray:
            raise UserError(f"--no-decay: {', '.join(stray)} not among the tuned experiments (--exp); add or drop it")

    @property
    def limits(self) -> tuple[int, int]:
        """The smallest and largest exponent the grid may reach."""
        return self.initial[0] - self.max_extend, self.initial[-1] + self.max_extend

    @property
    def initial(self) -> range:
        """The exponents k of the first grid: ``points`` of them around 0 (5 → -2..2)."""
        return range(-(self.points // 2), self.points - self.points // 2)


def knob(exp: str) -> str:
    """The TrainConfig field the tune's multiplier sets for ``exp``."""
    return "lr_scale" if exp == "modular" else "matrix_lr_scale"


def run_name(exp: str, k: int, seed: int, no_decay: bool = False) -> str:
    """``muon_all--mlr-2x--seed-0``: the run folder of multiplier 2^k (``lr-`` for modular's whole-network lr;
    ``--wd-0`` for a run without weight decay)."""
    wd = "--wd-0" if no_decay else ""
    return f"{exp}--{'lr' if knob(exp) == 'lr_scale' else 'mlr'}-{2.0**k:g}x{wd}--seed-{seed}"


def selection_grid(spec: TuneSpec, losses: Losses) -> list[int]:
    """The exponents the best multiplier is chosen from: the first grid and its extensions (first-seed runs within
    ``max_extend`` of it; a neighbour run beyond the limits is measured, not chosen)."""
    lo, hi = spec.limits
    return sorted(set(spec.initial) | {k for k, s in losses if s == spec.seeds[0] and lo <= k <= hi})


def best_exponent(spec: TuneSpec, losses: Losses) -> int | None:
    """The grid's best exponent by the first seed's final val loss (ties, e.g. every run diverged: the smallest)."""
    first = spec.seeds[0]
    grid = [k for k in selection_grid(spec, losses) if (k, first) in losses]
    return min(grid, key=lambda k: (losses[(k, first)], k)) if grid else None


def plan(spec: TuneSpec, losses: Losses) -> tuple[list[tuple[int, int]], str]:
    """The (k, seed) runs one experiment needs next for its grid and seeds.

    Returns ``(runs, phase)`` with phase ``"grid"`` (first seed, the grid or its extension), ``"seeds"`` (every
    seed at the centre and its two neighbours, the centre being the grid's best, then the lowest mean over every
    seed when that moved: so the chosen lr ends with seeded neighbours on both sides, within the grid's limits
    plus one) or ``"done"`` (no run left).
    """
    first = spec.seeds[0]
    grid = selection_grid(spec, losses)
    missing = [(k, first) for k in grid if (k, first) not in losses]
    if missing:
        return missing, "grid"
    centre = best_exponent(spec, losses)
    assert centre is not None  # the grid is complete and never empty
    lo_limit, hi_limit = spec.limits
    if centre == grid[0] and centre > lo_limit:
        return [(centre - 1, first)], "grid"
    if centre == grid[-1] and centre < hi_limit:
        return [(centre + 1, first)], "grid"
    while True:
        runs = [(k, s) for k in (centre - 1, centre, centre + 1) for s in spec.seeds if (k, s) not in losses]
        if runs:
            return runs, "seeds"
        moved = seeded_best(spec, losses)  # the seeds may disagree with the first seed's choice
        if moved == centre or not lo_limit <= moved <= hi_limit:
            return [], "done"
        centre = moved


def seeded_best(spec: TuneSpec, losses: Losses) -> int:
    """The exponent with the lowest mean over every seed (ties: the smaller) among the fully seeded ones."""
    means = {k: m for k in {k for k, _ in losses} if (m := seeded_mean(spec, losses, k)) is not None}
    return min(means, key=lambda k: (means[k], k))


def seeded_mean(spec: TuneSpec, losses: Losses, k: int) -> float | None:
    """Mean final val loss over every seed at exponent k (inf if one diverged; None until every seed ran)."""
    values = [losses.get((k, s)) for s in spec.seeds]
    if any(v is None for v in values):
        return None
    return math.fsum(v for v in values if v is not None) / len(values)


def chosen(spec: TuneSpec, losses: Losses, no_decay_losses: Losses | None = None) -> tuple[int, bool] | None:
    """The setting ``(k, without weight decay?)`` with the lowest mean over every seed among the fully seeded
    ones (ties: the smaller lr, with decay); None until the seeds phase is done."""
    if plan(spec, losses)[1] != "done":
        return None
    candidates = [
        ((m, k, False), (k, False)) for k in {k for k, _ in losses} if (m := seeded_mean(spec, losses, k)) is not None
    ]
    if no_decay_losses:
        candidates += [
            ((m, k, True), (k, True))
            for k in {k for k, _ in no_decay_losses}
            if (m := seeded_mean(spec, no_decay_losses, k)) is not None
        ]
    return min(candidates)[1] if candidates else None
