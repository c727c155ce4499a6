"""The report's numbers beyond the summary table: how fast each experiment reaches the baseline's final loss,
which learning rates were tried and whether the best is interior, and the JSON that holds every number shown."""

from __future__ import annotations

import math
from typing import Any

from .analysis import Group, Stat, compare, mean_val_curve, steps_to_reach

__all__ = [
    "TARGET_EXP",
    "to_target",
    "headline",
    "leader",
    "seconds_tol",
    "lr_multiplier",
    "lr_rows",
    "LR_HEADER",
    "family_rows",
    "summary_json",
    "stat_json",
]

# The constrained-Muon family, each judged against Muon on the same matrices.
FAMILY = ("manifold_muon", "spectral_sphere", "hyperball", "spel")

TARGET_EXP = "baseline"  # "equal loss": steps and seconds each experiment needs to reach this one's final val loss


def to_target(best: dict[str, Group]) -> tuple[float | None, dict[str, tuple[Stat, Stat]]]:
    """The target (the baseline's mean final val loss at its best setting) and, per experiment, the step at which
    its seeds' mean validation curve reaches it (inf: never within the run) and the training seconds to that step
    (by the timed run's clock when the group has one, else mean ± sd over the seeds' clocks)."""
    if TARGET_EXP not in best or not math.isfinite(best[TARGET_EXP].val_loss.mean):
        return None, {}
    target = best[TARGET_EXP].val_loss.mean
    out = {}
    for exp, g in best.items():
        step = steps_to_reach(mean_val_curve(g.runs), target)
        clocks = [g.timed] if g.timed else g.runs
        out[exp] = (Stat.of([step]), Stat.of([g.seconds_at(r, step) for r in clocks]))
    return target, out


def leader(stats: dict[str, Stat], tol: float) -> tuple[str | None, str | None, bool]:
    """The lowest finite mean, its runner-up, and whether the first is ahead beyond the spread rule."""
    ranked = sorted((s.mean, exp) for exp, s in stats.items() if math.isfinite(s.mean))
    if not ranked:
        return None, None, False
    if len(ranked) == 1:
        return ranked[0][1], None, True
    first, second = ranked[0][1], ranked[1][1]
    return first, second, compare(stats[first], stats[second], tol) < 0


def seconds_tol(seconds: dict[str, Stat]) -> float:
    """Equal time's tie rule: seconds within 5 % of the fastest tie."""
    return 0.05 * min((s.mean for s in seconds.values() if math.isfinite(s.mean)), default=0.0)


def _winner(stats: dict[str, Stat], tol: float, unit: str, spec: str) -> str:
    """``X (v), then Y (w): ahead, beyond the spread rule`` or ``... a tie under the spread rule``."""
    first, second, beyond = leader(stats, tol)
    if first is None:
        return "none"
    text = f"**{first}** ({stats[first].fmt(spec)}{unit})"
    if second is None:
        return text
    return text + (
        f", then {second} ({stats[second].fmt(spec)}{unit}): "
        + ("ahead, beyond the spread rule" if beyond else "a tie under the spread rule")
    )


def headline(best: dict[str, Group], tol: float) -> list[str]:
    """The report's answer, one line each: who has the lowest final val loss (equal steps) and who reaches the
    baseline's final val loss in the fewest seconds (equal time), each against its runner-up."""
    lines = [f"Equal steps (final val loss): {_winner({e: g.val_loss for e, g in best.items()}, tol, '', '.3f')}."]
    target, reach = to_target(best)
    if target is not None:
        seconds = {e: r[1] for e, r in reach.items()}
        lines.append(
            f"Equal time (seconds to {TARGET_EXP}'s final val loss {target:.3f}): "
            f"{_winner(seconds, seconds_tol(seconds), ' s', '.0f')}."
        )
        never = [e for e, s in seconds.items() if s.mean == math.inf]
        if never:
            lines.append(f"Never within the run: {', '.join(never)}.")
    return lines


def lr_multiplier(group: Group) -> float:
    """The tune's multiplier of a group: its matrix lr scale times its lr scale (1 for untuned runs)."""
    return float(group.settings.get("matrix_lr_scale", 1.0)) * float(group.settings.get("lr_scale", 1.0))


LR_HEADER = ["experiment", "multipliers tried", "best", "interior?", "val at best −1 / best / +1 (mean ± sd)"]


def lr_rows(groups: list[Group], best: dict[str, Group]) -> list[list[str]]:
    """One row per experiment whose groups differ in their lr multiplier (a tune or an lr sweep)."""
    rows = []
    for exp, b in best.items():
        others = _beside_lr(b)  # the best's other settings (weight decay...): its lr curve, not another's
        mine = sorted((g for g in groups if g.exp == exp and _beside_lr(g) == others), key=lr_multiplier)
        tried = sorted({lr_multiplier(g) for g in mine})
        if len(tried) < 2:
            continue
        m = lr_multiplier(b)
        i = tried.index(m)
        interior = 0 < i < len(tried) - 1
        cells = []
        for j in (i - 1, i, i + 1):
            at = [g for g in mine if 0 <= j < len(tried) and lr_multiplier(g) == tried[j]]
            chosen = max(at, key=lambda g: len(g.runs)) if at else None
            cells.append(f"{chosen.val_loss.fmt()} ({len(chosen.runs)})" if chosen else "-")
        rows.append(
            [
                exp,
                ", ".join(f"{t:g}x" for t in tried),
                f"{m:g}x",
                "yes" if interior else "**no: the best is on the grid's edge**",
                " / ".join(cells),
            ]
        )
    return rows


def _beside_lr(group: Group) -> dict[str, Any]:
    return {k: v for k, v in group.settings.items() if k not in ("lr", "lr_scale", "matrix_lr_scale")}


def family_rows(best: dict[str, Group], tol: float) -> list[list[str]]:
    """One line per member of the constrained-Muon family present: its final val loss against muon_all's, called
    only beyond the seeds' spread (at least ``tol``)."""
    if "muon_all" not in best:
        return []
    ref = best["muon_all"].val_loss
    words = {-1: "lower than muon_all", 0: "within the spread of muon_all", 1: "higher than muon_all"}
    return [
        [exp, best[exp].val_loss.fmt(), ref.fmt(), words[compare(best[exp].val_loss, ref, tol)]]
        for exp in FAMILY
        if exp in best
    ]


def _num(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def stat_json(s: Stat) -> dict[str, Any]:
    """A Stat as JSON: mean and sd (None where not finite), n, and whether the mean is +inf."""
    return {"mean": _num(s.mean), "sd": _num(s.sd), "n": s.n, "infinite": bool(s.mean == math.inf)}


def summary_json(
    context: dict[str, Any],
    machine: dict[str, Any],
    best: dict[str, Group],
    groups: list[Group],
    verdicts: list,
    extra: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Every number of the report's tables, for re-plotting: the context, the machine, each experiment at its best
    setting (with ``extra[exp]``: the summary table's per-experiment numbers), every setting, the verdicts."""
    target, reach = to_target(best)
    return {
        "context": context,
        "machine": machine,
        "target": {"experiment": TARGET_EXP, "final_val_loss": target},
        "experiments": {
            exp: {
                "setting": g.label,
                "settings": g.settings,
                "lr_multiplier": lr_multiplier(g),
                "seeds": len(g.runs),
                "diverged": g.diverged,
                "final_val_loss": stat_json(g.val_loss),
                "tokens_per_sec": stat_json(g.tokens_per_sec),
                "steps_to_target": stat_json(reach[exp][0]) if exp in reach else None,
                "seconds_to_target": stat_json(reach[exp][1]) if exp in reach else None,
                "timed_run": str(g.timed.path) if g.timed else None,
                **extra.get(exp, {}),
            }
            for exp, g in best.items()
        },
        "settings": [
            {
                "experiment": g.exp,
                "setting": g.label,
                "lr_multiplier": lr_multiplier(g),
                "seeds": len(g.runs),
                "diverged": g.diverged,
                "final_val_loss": stat_json(g.val_loss),
            }
            for g in groups
        ],
        "verdicts": [
            {
                "key": v.key,
                "title": v.title,
                "verdict": v.verdict,
                "why": v.reason,
                "rule": v.rule,
                "table": {"header": list(v.header), "rows": [list(r) for r in v.rows]},
            }
            for v in verdicts
        ],
    }
