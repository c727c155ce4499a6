"""``modman tune``: each experiment at its own learning rate, then seeds at the best lr and its two neighbours.

Per experiment, a factor-2 grid of lr multipliers ``2^k`` around its defaults (``points`` of them, k centred on 0)
is trained with the first seed. While the best point (lowest final validation loss; a diverged run counts as
infinitely bad) sits on the grid's edge, the grid grows by one point beyond that edge, up to ``max_extend`` times
a side. Then every seed runs at the best multiplier and at its two neighbours. The multiplier scales the attention
and FFN matrices' lrs (``--matrix-lr-scale``: the method's lr, embeddings and head keep AdamW's), except for
``modular``, whose one lr steps the whole network (``--lr-scale``).

Every run is an ordinary ``modman train`` run in ``OUT/EXP--mlr-2x--seed-S`` (``lr-2x`` for modular), so
``modman analyze OUT`` reads a tune folder like a sweep. ``OUT/tune.json`` records what the runs share (preset,
corpus digest, steps...): a folder tuned with other settings is refused, never mixed into one verdict. The plan
is a function of the finished runs, so an interrupted tune continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..common.data import load_text_bytes, sha256
from ..common.files import write_json_atomic
from .config import RESUME_FREE, TrainConfig
from .recipes import TRAIN_EXPERIMENTS
from .sweep import ended_summary
from .train import TrainingDiverged, train

__all__ = ["TuneSpec", "knob", "run_name", "plan", "tune", "tune_summary", "format_tune"]

# Settings every run of a tune folder must share (the ones a run may change on resume aside).
_PER_RUN = ("exp", "name", "seed", "lr_scale", "matrix_lr_scale")


@dataclasses.dataclass(frozen=True)
class TuneSpec:
    """What a tune does: the experiments, its seeds, the initial grid size and how far it may extend."""

    exps: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    points: int = 5
    max_extend: int = 3

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


def run_name(exp: str, k: int, seed: int) -> str:
    """``muon_all--mlr-2x--seed-0``: the run folder of multiplier 2^k (``lr-`` for modular's whole-network lr)."""
    return f"{exp}--{'lr' if knob(exp) == 'lr_scale' else 'mlr'}-{2.0**k:g}x--seed-{seed}"


def selection_grid(spec: TuneSpec, losses: dict[tuple[int, int], float]) -> list[int]:
    """The exponents the best multiplier is chosen from: the first grid and its extensions (first-seed runs within
    ``max_extend`` of it; a neighbour run beyond the limits is measured, not chosen)."""
    lo, hi = spec.limits
    return sorted(set(spec.initial) | {k for k, s in losses if s == spec.seeds[0] and lo <= k <= hi})


def plan(spec: TuneSpec, losses: dict[tuple[int, int], float]) -> tuple[list[tuple[int, int]], str]:
    """The (k, seed) runs one experiment needs next, given its ended runs' final val losses (inf: diverged).

    Returns ``(runs, phase)`` with phase ``"grid"`` (first seed, the grid or its extension), ``"seeds"`` (every
    seed at the best multiplier and its neighbours) or ``"done"`` (no run left).
    """
    first = spec.seeds[0]
    grid = selection_grid(spec, losses)
    missing = [(k, first) for k in grid if (k, first) not in losses]
    if missing:
        return missing, "grid"
    best = min(grid, key=lambda k: (losses[(k, first)], k))  # ties (every run diverged): the smallest lr
    lo_limit, hi_limit = spec.limits
    if best == grid[0] and best > lo_limit:
        return [(best - 1, first)], "grid"
    if best == grid[-1] and best < hi_limit:
        return [(best + 1, first)], "grid"
    runs = [(k, s) for k in (best - 1, best, best + 1) for s in spec.seeds if (k, s) not in losses]
    return runs, "seeds" if runs else "done"


def _manifest(settings: dict[str, Any], spec: TuneSpec) -> dict[str, Any]:
    cfg = TrainConfig(**{**settings, "exp": spec.exps[0]})
    shared = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _PER_RUN + RESUME_FREE}
    shared["data"] = cfg.data or "embedded Shakespeare"
    shared["data_sha256"] = sha256(load_text_bytes(cfg.data))
    return {"settings": shared, "seeds": list(spec.seeds), "points": spec.points, "max_extend": spec.max_extend}


def _check_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Refuse a folder tuned with other shared settings (another preset, corpus, step count...)."""
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path} is not a tune manifest (not JSON); move it away or choose another --out") from None
    shared = saved.get("settings", {}) if isinstance(saved, dict) else {}
    differ = [f"{k}: {shared.get(k)!r} there, {v!r} now" for k, v in manifest["settings"].items() if shared.get(k) != v]
    for key in ("seeds", "points", "max_extend"):
        if saved.get(key) != manifest[key]:
            differ.append(f"{key}: {saved.get(key)!r} there, {manifest[key]!r} now")
    if differ:
        raise UserError(
            f"{path.parent} holds a tune with other settings ({'; '.join(differ)}); its runs cannot share a "
            "verdict with these: choose another --out, or repeat the flags of that tune"
        )


def _config(settings: dict[str, Any], exp: str, k: int, seed: int) -> TrainConfig:
    return TrainConfig(**{**settings, knob(exp): 2.0**k, "exp": exp, "seed": seed, "name": run_name(exp, k, seed)})


def _losses(exp: str, ended: dict[str, dict]) -> dict[tuple[int, int], float]:
    """Final val loss per (k, seed) of ``exp``'s ended runs (inf where it diverged)."""
    out: dict[tuple[int, int], float] = {}
    for summary in ended.values():
        if summary["experiment"] != exp:
            continue
        loss = summary.get("final_val_loss")
        k, seed = summary["tune"]
        if summary.get("status") == "diverged" or not isinstance(loss, (int, float)):
            out[(k, seed)] = math.inf
        else:
            out[(k, seed)] = float(loss)
    return out


def tune(
    settings: dict[str, Any], spec: TuneSpec, log: Callable[[str], None] | None = None, max_runs: int | None = None
) -> dict[str, dict]:
    """Run the tune, or continue it; returns ``{run name: summary}`` of every ended run of the plan (each summary
    with ``tune: [k, seed]``). ``max_runs`` stops after that many new runs (a later call continues)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    for key in _PER_RUN + ("lr",):
        if key in settings:
            raise UserError(f"modman tune sets {key} for each run itself; leave it out of the flags and --config")
    out = Path(settings.get("out", TrainConfig.out))
    manifest = _manifest(settings, spec)
    _check_manifest(out / "tune.json", manifest)
    _config(settings, spec.exps[0], 0, spec.seeds[0]).resolved_device()  # an unusable --device fails first
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "tune.json", manifest)
    ended: dict[str, dict] = {}
    new_runs = 0
    while True:
        plans = {exp: plan(spec, _losses(exp, ended)) for exp in spec.exps}
        found = False  # runs of the plan that ended before (an earlier call): read, then plan again
        for exp, (runs, _) in plans.items():
            for k, seed in runs:
                cfg = _config(settings, exp, k, seed)
                summary = ended_summary(cfg)
                if summary is not None:
                    ended[run_name(exp, k, seed)] = {**summary, "tune": [k, seed]}
                    found = True
        if found:
            continue
        todo = sorted(
            ((phase != "grid", i, exp, runs[0]) for i, (exp, (runs, phase)) in enumerate(plans.items()) if runs)
        )  # every experiment's grid before anyone's seeds
        if not todo or (max_runs is not None and new_runs >= max_runs):
            return ended
        _, _, exp, (k, seed) = todo[0]
        cfg = _config(settings, exp, k, seed)
        left = sum(len(runs) for runs, _ in plans.values())
        walls = [s["wall_seconds"] for s in ended.values() if isinstance(s.get("wall_seconds"), (int, float))]
        eta = f", ETA {left * sum(walls) / len(walls) / 60:.0f}+ min" if walls else ""
        log(f"modman tune [{len(ended)} ended, {left}+ to run{eta}]: {cfg.run_dir} ({plans[exp][1]})")
        try:
            summary = train(cfg, resume=True)
        except TrainingDiverged as e:
            log(f"  {e}")
            summary = json.loads((cfg.run_dir / "summary.json").read_text())
        ended[run_name(exp, k, seed)] = {**summary, "tune": [k, seed]}
        new_runs += 1


def tune_summary(spec: TuneSpec, ended: dict[str, dict]) -> list[dict[str, Any]]:
    """Per experiment: the best multiplier, whether it is interior, and the final val loss over seeds there."""
    rows = []
    for exp in spec.exps:
        losses = _losses(exp, ended)
        grid = [k for k in selection_grid(spec, losses) if (k, spec.seeds[0]) in losses]
        if not grid:
            continue
        runs, phase = plan(spec, losses)
        best = min(grid, key=lambda k: (losses[(k, spec.seeds[0])], k))
        at_best = [losses[(best, s)] for s in spec.seeds if (best, s) in losses]
        finite = [v for v in at_best if math.isfinite(v)]
        rows.append(
            {
                "experiment": exp,
                "knob": knob(exp),
                "best_multiplier": 2.0**best,
                "grid": [2.0**k for k in grid],
                "interior": grid[0] < best < grid[-1],
                "seeds": len(at_best),
                "diverged": len(at_best) - len(finite),
                "val_mean": sum(finite) / len(finite) if finite else None,
                "val_sd": _sd(finite),
                "done": phase == "done",
            }
        )
    return rows


def _sd(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def format_tune(rows: list[dict[str, Any]]) -> str:
    """The end-of-tune table: one row per experiment."""
    head = f"{'experiment':<19}{'knob':<17}{'best':>7}  {'grid':<22}{'seeds':>6}{'val (mean ± sd)':>20}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        grid = f"{r['grid'][0]:g}x..{r['grid'][-1]:g}x" + ("" if r["interior"] else " (EDGE)")
        val = (
            "-" if r["val_mean"] is None else f"{r['val_mean']:.3f}" + (f" ± {r['val_sd']:.3f}" if r["val_sd"] else "")
        )
        status = "done" if r["done"] else "in progress"
        if r["diverged"]:
            status += f", {r['diverged']} diverged"
        best = f"{r['best_multiplier']:g}x"
        lines.append(f"{r['experiment']:<19}{r['knob']:<17}{best:>7}  {grid:<22}{r['seeds']:>6}{val:>20}  {status}")
    return "\n".join(lines)
