"""Read a folder of ``modman train`` / ``modman sweep`` runs and reduce them to comparable numbers.

A *run* is a folder with ``summary.json`` and ``metrics.jsonl`` (``spectra.jsonl`` optional). Runs whose
settings differ only in the seed form a *group*; a group's numbers are the mean and the sample standard
deviation over its seeds. Each experiment is then represented by its best group (lowest mean final
validation loss), so methods are compared at their best learning rate / weight decay.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..common.files import read_json

__all__ = [
    "Run",
    "Group",
    "relative_speed",
    "load_runs",
    "group_runs",
    "best_groups",
    "Stat",
    "MATRIX_ROLES",
    "loss_spike",
    "norm_growth",
    "worst_condition",
    "train_curve",
    "val_curve",
    "final_spectra",
    "compare",
    "CONTEXT",
    "check_one_context",
    "steps_to_reach",
    "mean_val_curve",
    "seconds_at_step",
    "TIMED",
    "attach_timed",
]

# A tune's timed runs (OUT/timed/): each best setting trained again alone, for its wall-clock seconds. They are
# not seeds of their group: they lend it their seconds.
TIMED = "timed"

MATRIX_ROLES = ("attention", "ffn")
# Settings that do not define a group: runs differing only in these are seeds of one group.
NOT_GROUPING = ("seed", "out", "name", "device", "progress", "checkpoint_every", "parallel")


@dataclass
class Run:
    path: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    spectra: list[dict[str, Any]]

    @property
    def config(self) -> dict[str, Any]:
        return self.summary["config"]

    @property
    def exp(self) -> str:
        return self.summary["experiment"]

    @property
    def diverged(self) -> bool:
        return self.summary.get("status") == "diverged"


def _read_jsonl(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not text (byte {e.start} is not UTF-8); it is damaged or not a modman log") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {i} is not JSON ({e.msg})") from None
        if not isinstance(row, dict) or "step" not in row:
            raise UserError(f"{path}: line {i} is not a record with a 'step'")
        rows.append(row)
    return rows


def _load_run(folder: Path) -> Run:
    summary_path = folder / "summary.json"
    summary = read_json(summary_path, "not there: the run has not ended (finish it with --resume)")
    missing = [
        k
        for k in ("experiment", "status", "config", "final_val_loss", "tokens_per_sec")
        if not isinstance(summary, dict) or k not in summary
    ]
    if missing:
        raise UserError(f"{summary_path}: missing field(s) {', '.join(missing)}")
    metrics_path = folder / "metrics.jsonl"
    if not metrics_path.is_file():
        raise UserError(f"{folder}: no metrics.jsonl")
    metrics = _read_jsonl(metrics_path)
    spectra = _read_jsonl(folder / "spectra.jsonl") if (folder / "spectra.jsonl").is_file() else []
    return Run(folder, summary, metrics, spectra)


def load_runs(root: str | Path, timed: bool = False) -> tuple[list[Run], list[str]]:
    """Every run under ``root`` (any depth) and one line per folder that was skipped, saying why; the timed runs
    (under ``root/timed/``) only, with ``timed=True``."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder of runs; give the --out folder of modman train or modman sweep")
    folders = sorted(
        {
            p.parent
            for pattern in ("summary.json", "metrics.jsonl")
            for p in root.rglob(pattern)
            if "report" not in p.relative_to(root).parts[:-1] and (p.relative_to(root).parts[0] == TIMED) == timed
        }
    )
    runs, problems = [], []
    for folder in folders:
        try:
            runs.append(_load_run(folder))
        except (ValueError, OSError) as e:
            problems.append(f"{e}; skipped")
    return runs, problems


# ---- per-run numbers --------------------------------------------------------------------------------------


def train_curve(run: Run) -> list[tuple[int, float, float]]:
    """``(step, train_loss, train_seconds)`` at each log step (seconds rebuilt from tokens/s in older logs)."""
    from ..llm.model import PRESETS

    cfg = run.config
    tokens_per_step = cfg.get("batch_size", 0) * PRESETS[cfg["preset"]].seq_len if cfg.get("preset") in PRESETS else 0
    out, seconds, prev = [], 0.0, 0
    for m in run.metrics:
        if "train_loss" not in m:
            continue
        if "train_seconds" in m:
            seconds = m["train_seconds"]
        elif m.get("tokens_per_sec"):
            seconds += (m["step"] - prev) * tokens_per_step / m["tokens_per_sec"]
        prev = m["step"]
        out.append((m["step"], float(m["train_loss"]), seconds))
    return out


def val_curve(run: Run) -> list[tuple[int, float]]:
    return [(m["step"], float(m["val_loss"])) for m in run.metrics if m.get("val_loss") is not None]


def loss_spike(run: Run) -> float:
    """Largest rise of the logged train loss above its best value so far, after warmup (inf if it diverged)."""
    if run.diverged:
        return math.inf
    warmup = run.config.get("warmup_steps", 0)
    best, spike = math.inf, 0.0
    for step, loss, _ in train_curve(run):
        if step > warmup and best < math.inf:
            spike = max(spike, loss - best)
        best = min(best, loss)
    return spike


def final_spectra(run: Run) -> list[dict]:
    """The spectra records of the last evaluated step."""
    if not run.spectra:
        return []
    last = max(s["step"] for s in run.spectra)
    return [s for s in run.spectra if s["step"] == last]


def worst_condition(run: Run, roles=MATRIX_ROLES) -> float:
    """Largest condition number among the attention/FFN matrices at the end (nan without spectra)."""
    values = [s["condition_number"] for s in final_spectra(run) if s.get("role") in roles]
    return max(values) if values else math.nan


def norm_growth(run: Run, roles=MATRIX_ROLES) -> float:
    """Largest ratio final / initial Frobenius norm among the attention/FFN matrices (nan without spectra)."""
    if not run.spectra:
        return math.nan
    first = min(s["step"] for s in run.spectra)
    start = {s["name"]: s["fro_norm"] for s in run.spectra if s["step"] == first}
    ratios = [
        s["fro_norm"] / start[s["name"]] for s in final_spectra(run) if s.get("role") in roles and start.get(s["name"])
    ]
    return max(ratios) if ratios else math.nan


# ---- groups -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (sd 0 for one seed; ``n`` seeds)."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        vals = [float(v) for v in values if not math.isnan(float(v))]
        if not vals:
            return cls(math.nan, math.nan, 0)
        if any(math.isinf(v) for v in vals):
            return cls(math.inf if max(vals) == math.inf else -math.inf, 0.0, len(vals))
        return cls(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))

    def fmt(self, spec: str = ".3f") -> str:
        if math.isnan(self.mean):
            return "-"
        if math.isinf(self.mean):
            return "diverged" if self.mean > 0 else "-inf"
        return f"{self.mean:{spec}}" + (f" ± {self.sd:{spec}}" if self.n > 1 else "")


@dataclass
class Group:
    exp: str
    settings: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    label: str = ""
    timed: Run | None = None  # the same setting trained alone: its seconds stand for every seed's

    def seconds_at(self, run: Run, step: float) -> float:
        """Training seconds ``run`` took to reach ``step``, by the timed run's clock when there is one."""
        return seconds_at_step(self.timed or run, step)

    def stat(self, fn) -> Stat:
        return Stat.of([fn(r) for r in self.runs])

    @property
    def val_loss(self) -> Stat:
        return self.stat(
            lambda r: math.inf if r.diverged or r.summary["final_val_loss"] is None else r.summary["final_val_loss"]
        )

    @property
    def diverged(self) -> int:
        return sum(r.diverged for r in self.runs)

    @property
    def tokens_per_sec(self) -> Stat:
        """Over the seeds, or the timed run's alone."""
        runs = [self.timed] if self.timed else self.runs
        return Stat.of([r.summary["tokens_per_sec"] or math.nan for r in runs])


def relative_speed(group: Group, best: dict[str, Group]) -> str:
    """The group's mean tokens/s over baseline's best group's, as ``0.55x`` (``-`` without a baseline)."""
    base = best["baseline"].tokens_per_sec.mean if "baseline" in best else math.nan
    tps = group.tokens_per_sec.mean
    return f"{tps / base:.2f}x" if math.isfinite(base) and base > 0 and math.isfinite(tps) else "-"


def _key(run: Run) -> str:
    """The run's settings but the seed; settings newer than the run take their default value."""
    from ..llm.config import TrainConfig

    config = {**dataclasses.asdict(TrainConfig()), **run.config}
    return json.dumps({k: v for k, v in sorted(config.items()) if k not in NOT_GROUPING}, sort_keys=True)


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs with the same settings but the seed, each group labelled by what sets it apart within its experiment."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = _key(run)
        groups.setdefault(key, Group(run.exp, json.loads(key))).runs.append(run)
    out = list(groups.values())
    order: dict[int, tuple] = {}
    for g in out:
        peers = [h.settings for h in out if h.exp == g.exp]
        varying = sorted(k for k in g.settings if k != "exp" and any(p.get(k) != g.settings[k] for p in peers))
        g.label = ", ".join(f"{k}={g.settings[k]}" for k in varying) or "default"
        order[id(g)] = (g.exp, *(_sortable(g.settings[k]) for k in varying))
    return sorted(out, key=lambda g: order[id(g)])


def _sortable(value: object) -> tuple[int, float, str]:
    """A setting's value as a sort key: numbers by size (2 before 16), anything else by its text after them."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def attach_timed(groups: list[Group], timed: list[Run]) -> list[str]:
    """Give each group the timed run of its setting (the newest when several); returns one line per timed run
    that matches no group (a setting whose seeds are gone)."""
    by_key: dict[str, Run] = {}
    for run in sorted(timed, key=lambda r: r.path.stat().st_mtime if r.path.exists() else 0.0):
        by_key[_key(run)] = run
    unused = dict(by_key)
    for g in groups:
        key = _key(g.runs[0]) if g.runs else ""
        g.timed = by_key.get(key)
        unused.pop(key, None)
    return [f"{r.path}: a timed run of no setting in this folder; not used" for r in unused.values()]


def best_groups(groups: list[Group]) -> dict[str, Group]:
    """Each experiment's group with the lowest mean final validation loss (diverged counts as infinite) among
    its groups with the most seeds: a tune's one-seed grid points inform the choice of lr, the seeded ones
    carry the verdict."""
    most = {g.exp: max(len(h.runs) for h in groups if h.exp == g.exp) for g in groups}
    best: dict[str, Group] = {}
    for g in groups:
        if len(g.runs) == most[g.exp] and (g.exp not in best or g.val_loss.mean < best[g.exp].val_loss.mean):
            best[g.exp] = g
    return best


# What makes runs comparable at all: a folder mixing these is refused (its verdicts would mix corpora or budgets).
CONTEXT = ("preset", "model", "max_steps", "data", "batch_size", "dtype")


def check_one_context(runs: list[Run]) -> dict[str, Any]:
    """The settings of CONTEXT all runs share; a UserError naming the kinds when they do not share them."""
    kinds: dict[str, list[str]] = {}
    for run in runs:
        context = {k: run.config.get(k) for k in CONTEXT}
        kinds.setdefault(json.dumps(context, sort_keys=True), []).append(run.path.name)
    if len(kinds) > 1:
        listed = "; ".join(
            f"{', '.join(f'{k}={v}' for k, v in json.loads(key).items())} ({len(names)} runs, e.g. {names[0]})"
            for key, names in kinds.items()
        )
        raise UserError(
            f"the runs in this folder differ in {', '.join(CONTEXT)} and cannot share one verdict: {listed}; "
            "analyze each kind in a folder of its own"
        )
    return json.loads(next(iter(kinds)))


def mean_val_curve(runs: list[Run]) -> list[tuple[int, float]]:
    """The seeds' mean validation loss at each step every run evaluated (a diverged run's curve ends early)."""
    curves = [dict(val_curve(r)) for r in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return [(s, statistics.fmean(c[s] for c in curves)) for s in steps]


def steps_to_reach(run: Run | list[tuple[int, float]], target: float) -> float:
    """The first step at which the validation loss (of a run, or a curve of ``(step, loss)``) is at or below
    ``target`` (linear between evaluations; inf if never)."""
    prev = None
    for step, loss in val_curve(run) if isinstance(run, Run) else run:
        if loss <= target:
            if prev is None or prev[1] == loss:
                return float(step)
            (s0, l0) = prev
            return s0 + (step - s0) * (l0 - target) / (l0 - loss)
        prev = (step, loss)
    return math.inf


def seconds_at_step(run: Run, step: float) -> float:
    """Training seconds at ``step`` (linear between log steps; inf for inf)."""
    if not math.isfinite(step):
        return math.inf
    curve = [(0, 0.0)] + [(s, sec) for s, _, sec in train_curve(run)]
    for (s0, t0), (s1, t1) in zip(curve, curve[1:]):
        if s0 <= step <= s1:
            return t0 + (t1 - t0) * ((step - s0) / (s1 - s0) if s1 > s0 else 0.0)
    return curve[-1][1] if curve and step >= curve[-1][0] else math.inf


def compare(a: Stat, b: Stat, tol: float) -> int:
    """-1 if ``a`` is below ``b`` by more than the spread (sd_a + sd_b, at least ``tol``), 1 if above, else 0."""
    if math.isnan(a.mean) or math.isnan(b.mean):
        return 0
    if math.isinf(a.mean) or math.isinf(b.mean):
        return 0 if a.mean == b.mean else (-1 if a.mean < b.mean else 1)
    margin = max(a.sd + b.sd, tol)
    return -1 if a.mean < b.mean - margin else 1 if a.mean > b.mean + margin else 0
