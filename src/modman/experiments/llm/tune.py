"""``modman tune``: each experiment at its own learning rate, 3 seeds at the best, timed alone at the end.

The plan (``tune_plan``): a factor-2 grid of lr multipliers around each experiment's defaults with the first seed,
extended while the best sits on an edge; every seed at the best multiplier and its two neighbours; for the
``no_decay`` experiments every seed at the best again without weight decay (H5 of the LLM experiment plan); last,
each experiment's chosen setting (lowest mean over the seeds) trained once more, one run after another, into
``OUT/timed/``: its seconds are the report's wall-clock numbers, so keep the machine otherwise idle for that phase
(``timing=False`` leaves it for a later call). The multiplier scales the attention and FFN matrices' lrs
(``--matrix-lr-scale``: the method's lr; embeddings and head keep AdamW's), except for ``modular``, whose one lr
steps the whole network (``--lr-scale``).

Every run is an ordinary ``modman train`` run in ``OUT/EXP--mlr-2x--seed-S`` (``lr-2x`` for modular, ``--wd-0``
without decay), so ``modman analyze OUT`` reads a tune folder like a sweep. ``OUT/tune.json`` records what the runs
share (preset, corpus digest, steps...): a folder tuned with other settings is refused, never mixed into one
verdict. The plan is a function of the finished runs, so an interrupted tune continues where it stopped, and
several ``modman tune`` processes may share one folder (one per GPU, say): each claims the run it trains
(``claims``), takes the next unclaimed one, and waits when every run left is another's; one of them times the
best settings, once no other trains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..common.data import load_text_bytes, sha256
from ..common.files import write_json_atomic
from .claims import claimed, held_elsewhere
from .config import RESUME_FREE, TrainConfig
from .sweep import ended_summary
from .train import TrainingDiverged, train
from .tune_plan import Losses, TuneSpec, best_exponent, chosen, knob, plan, run_name, seeded_best, seeded_mean

__all__ = ["TuneSpec", "knob", "run_name", "plan", "tune", "tune_summary", "format_tune", "TIMED"]

# Settings every run of a tune folder must share (the ones a run may change on resume aside).
_PER_RUN = ("exp", "name", "seed", "lr_scale", "matrix_lr_scale")
TIMED = "timed"  # OUT/timed/: each experiment's best setting, trained again one run at a time for its seconds
NO_DECAY = "no-decay"
PHASES = ("grid", "seeds", NO_DECAY, TIMED)  # the order runs are taken in, across experiments
POLL_S = 30.0  # how often a tune process whose every run left is another's looks again


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
    defaults = dataclasses.asdict(TrainConfig())  # a setting newer than the manifest: it was at its default then
    differ = [
        f"{k}: {shared.get(k, defaults.get(k))!r} there, {v!r} now"
        for k, v in manifest["settings"].items()
        if shared.get(k, defaults.get(k)) != v
    ]
    for key in ("seeds", "points", "max_extend"):
        if saved.get(key) != manifest[key]:
            differ.append(f"{key}: {saved.get(key)!r} there, {manifest[key]!r} now")
    if differ:
        raise UserError(
            f"{path.parent} holds a tune with other settings ({'; '.join(differ)}); its runs cannot share a "
            "verdict with these: choose another --out, or repeat the flags of that tune"
        )


Run = tuple[int, int, bool]  # (k, seed, without weight decay?)


def _config(settings: dict[str, Any], exp: str, run: Run) -> TrainConfig:
    k, seed, no_decay = run
    extra = {"weight_decay": 0.0} if no_decay else {}
    name = run_name(exp, k, seed, no_decay)
    return TrainConfig(**{**settings, **extra, knob(exp): 2.0**k, "exp": exp, "seed": seed, "name": name})


def _losses(exp: str, ended: dict[str, dict], no_decay: bool = False) -> Losses:
    """Final val loss per (k, seed) of ``exp``'s ended untimed runs, with or without decay (inf: diverged)."""
    out: Losses = {}
    for summary in ended.values():
        if summary["experiment"] != exp or summary.get("timed") or summary.get("no_decay", False) != no_decay:
            continue
        loss = summary.get("final_val_loss")
        k, seed = summary["tune"]
        if summary.get("status") == "diverged" or not isinstance(loss, (int, float)):
            out[(k, seed)] = math.inf
        else:
            out[(k, seed)] = float(loss)
    return out


def _plans(spec: TuneSpec, ended: dict[str, dict], decay: bool, timing: bool) -> dict[str, tuple[list[Run], str]]:
    """Each experiment's next runs and their phase: grid, seeds, no-decay, timed (once every other is done)."""
    plans: dict[str, tuple[list[Run], str]] = {}
    for exp in spec.exps:
        losses = _losses(exp, ended)
        runs, phase = plan(spec, losses)
        plans[exp] = ([(k, s, False) for k, s in runs], phase)
        if phase == "done" and decay and exp in spec.no_decay:
            k = seeded_best(spec, losses)
            nd = _losses(exp, ended, no_decay=True)
            todo = [(k, s, True) for s in spec.seeds if (k, s) not in nd]
            if todo:
                plans[exp] = (todo, NO_DECAY)
    if timing and all(phase == "done" for _, phase in plans.values()):
        for exp in spec.exps:  # every seed has run: each chosen setting once more, for its seconds
            pick = chosen(spec, _losses(exp, ended), _losses(exp, ended, no_decay=True))
            if pick is not None and _key(exp, (pick[0], spec.seeds[0], pick[1]), True) not in ended:
                plans[exp] = ([(pick[0], spec.seeds[0], pick[1])], TIMED)
    return plans


def tune(
    settings: dict[str, Any],
    spec: TuneSpec,
    log: Callable[[str], None] | None = None,
    max_runs: int | None = None,
    timing: bool = True,
) -> dict[str, dict]:
    """Run the tune, or continue it; returns ``{run name: summary}`` of every ended run of the plan (each summary
    with ``tune: [k, seed]``, ``no_decay`` and ``timed``; the timed runs named ``timed/NAME``). ``max_runs`` stops
    after that many new runs, ``timing=False`` before the timed phase (a later call continues)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    for key in _PER_RUN + ("lr",):
        if key in settings:
            raise UserError(f"modman tune sets {key} for each run itself; leave it out of the flags and --config")
    out = Path(settings.get("out", TrainConfig.out))
    manifest = _manifest(settings, spec)
    _check_manifest(out / "tune.json", manifest)
    _config(settings, spec.exps[0], (0, spec.seeds[0], False)).resolved_device()  # an unusable --device fails first
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "tune.json", manifest)
    timed_settings = {**settings, "out": str(out / TIMED)}
    decay = float(manifest["settings"]["weight_decay"]) != 0.0  # already 0: the no-decay phase has nothing to add
    ended: dict[str, dict] = {}
    new_runs, waiting = 0, False
    with contextlib.ExitStack() as timing_lock:
        timing_held = False
        while True:
            plans = _plans(spec, ended, decay, timing)
            found = False  # runs that ended before (an earlier call, another process): read, then plan again
            for exp, (runs, phase) in plans.items():
                for run in runs:
                    summary = ended_summary(_config(timed_settings if phase == TIMED else settings, exp, run))
                    if summary is not None:
                        ended[_key(exp, run, phase == TIMED)] = _tagged(summary, run, phase == TIMED)
                        found = True
            if found:
                continue
            todo = sorted(  # every experiment's grid before anyone's seeds, the timed runs last
                (PHASES.index(phase), i, j, exp, run)
                for i, (exp, (runs, phase)) in enumerate(plans.items())
                for j, run in enumerate(runs)
            )
            if not todo or (max_runs is not None and new_runs >= max_runs):
                return ended
            if PHASES[todo[0][0]] == TIMED and not timing_held:
                if not timing_lock.enter_context(claimed(out / TIMED)):
                    log(f"modman tune: another modman tune process times the runs of {out}; this one stops")
                    return ended
                timing_held = True
                _wait_alone(out, log)
            ran = False
            for p, _, _, exp, run in todo:
                phase = PHASES[p]
                cfg = _config(timed_settings if phase == TIMED else settings, exp, run)
                with claimed(cfg.run_dir) as mine:
                    if not mine:
                        continue  # another modman tune process trains it
                    if ended_summary(cfg) is None:  # else it ended meanwhile: read it on the next round
                        log(_progress(ended, len(todo), cfg, phase))
                        ended[_key(exp, run, phase == TIMED)] = _tagged(_train(cfg, log), run, phase == TIMED)
                        new_runs += 1
                    ran, waiting = True, False
                break
            if not ran:  # every run left is another process's: wait for one to end
                if not waiting:
                    log(f"modman tune: every run left ({len(todo)}) is another modman tune process's; waiting")
                waiting = True
                time.sleep(POLL_S)


def _progress(ended: dict[str, dict], left: int, cfg: TrainConfig, phase: str) -> str:
    walls = [s["wall_seconds"] for s in ended.values() if isinstance(s.get("wall_seconds"), (int, float))]
    eta = f", ETA {left * sum(walls) / len(walls) / 60:.0f}+ min" if walls else ""
    why = "timed: keep the machine otherwise idle, its seconds are the report's" if phase == TIMED else phase
    return f"modman tune [{len(ended)} ended, {left}+ to run{eta}]: {cfg.run_dir} ({why})"


def _train(cfg: TrainConfig, log: Callable[[str], None]) -> dict:
    try:
        return train(cfg, resume=True)
    except TrainingDiverged as e:
        log(f"  {e}")
        return json.loads((cfg.run_dir / "summary.json").read_text())


def _wait_alone(out: Path, log: Callable[[str], None]) -> None:
    """Wait until no other process trains a run of ``out``: the timed runs measure an otherwise idle tune."""
    told = False
    while busy := [p for p in held_elsewhere(out) if p != out / TIMED]:
        if not told:
            log(f"modman tune: timing waits for {len(busy)} run(s) of other processes, e.g. {busy[0]}")
            told = True
        time.sleep(POLL_S)


def _tagged(summary: dict, run: Run, timed: bool) -> dict:
    return {**summary, "tune": [run[0], run[1]], "no_decay": run[2], "timed": timed}


def _key(exp: str, run: Run, timed: bool) -> str:
    name = run_name(exp, *run)
    return f"{TIMED}/{name}" if timed else name


def tune_summary(spec: TuneSpec, ended: dict[str, dict]) -> list[dict[str, Any]]:
    """Per experiment: the best multiplier (the chosen setting's once every seed ran, else the grid's), whether it
    is interior to the multipliers tried, the final val loss over seeds there, with and without decay, its phase."""
    rows = []
    for exp in spec.exps:
        losses, nd = _losses(exp, ended), _losses(exp, ended, no_decay=True)
        grid = sorted({k for k, _ in losses})  # every exponent tried, a neighbour beyond the limits too
        pick = chosen(spec, losses, nd)
        best = pick[0] if pick else best_exponent(spec, losses)
        if best is None:
            continue
        at_best = [losses[(best, s)] for s in spec.seeds if (best, s) in losses]
        finite = [v for v in at_best if math.isfinite(v)]
        without = seeded_mean(spec, nd, best)
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
                "no_decay_val_mean": without,
                "chosen_without_decay": bool(pick and pick[1]),
                "done": plan(spec, losses)[1] == "done",
                "timed": bool(pick) and _key(exp, (best, spec.seeds[0], bool(pick and pick[1])), True) in ended,
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
        status = ("done, timed" if r.get("timed") else "done, not timed") if r["done"] else "in progress"
        if r.get("no_decay_val_mean") is not None:
            status += f", wd 0: {r['no_decay_val_mean']:.3f}" + (" (chosen)" if r["chosen_without_decay"] else "")
        if r["diverged"]:
            status += f", {r['diverged']} diverged"
        best = f"{r['best_multiplier']:g}x"
        lines.append(f"{r['experiment']:<19}{r['knob']:<17}{best:>7}  {grid:<22}{r['seeds']:>6}{val:>20}  {status}")
    return "\n".join(lines)
