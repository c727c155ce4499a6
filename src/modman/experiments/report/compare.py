"""``modman compare DIR DIR ...``: several reports (one tune per corpus, say) in one table — does the answer hold?

Each DIR must hold ``report/summary.json`` from ``modman analyze DIR``; nothing is recomputed, so the comparison
shows exactly the reports' numbers. Per experiment and folder: the final val loss (equal steps) and the seconds to
that folder's baseline's final val loss (equal time), each with its rank, and whether the experiment's verdict
against the baseline (lower / a tie / higher, beyond the seeds' spread) is the same in every folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..common.files import read_json, write_json_atomic, write_text_atomic
from ..llm.recipes import TRAIN_EXPERIMENTS
from .analysis import Stat, compare
from .hypotheses import LOSS_TOL
from .numbers import TARGET_EXP, leader, seconds_tol, stat_json
from .report import machine_text

__all__ = ["load_report", "label_of", "comparison", "render_comparison", "write_comparison"]

VERDICT = {-1: "lower", 0: "tie", 1: "higher"}


def load_report(folder: str | Path) -> dict[str, Any]:
    """The ``summary.json`` of ``folder``'s report (a UserError naming the command that writes it)."""
    path = Path(folder) / "report" / "summary.json"
    data = read_json(
        path, f"no report summary; run modman analyze {folder} first", f"run modman analyze {folder} again"
    )
    if not isinstance(data, dict) or not isinstance(data.get("experiments"), dict):
        raise UserError(f"{path}: not a modman report summary (no 'experiments'); run modman analyze {folder} again")
    return data


def label_of(report: dict[str, Any], folder: str | Path) -> str:
    """A column label: the corpus (file stem, or "Shakespeare" for the embedded one), else the folder's name."""
    data = (report.get("context") or {}).get("data", "")
    if data is None or data == "embedded Shakespeare":
        return "Shakespeare"
    return Path(data).stem if data else Path(folder).name


def _stat(entry: dict[str, Any] | None) -> Stat:
    if not entry:
        return Stat(math.nan, math.nan, 0)
    if entry.get("infinite"):
        return Stat(math.inf, 0.0, entry.get("n", 0))
    mean = entry.get("mean")
    return Stat(math.nan if mean is None else mean, entry.get("sd") or 0.0, entry.get("n", 0))


def _ranks(values: dict[str, float]) -> dict[str, int]:
    order = sorted((v, e) for e, v in values.items() if not math.isnan(v))
    return {e: i + 1 for i, (_, e) in enumerate(order)}


def _vs_baseline(exp: str, val: Stat, base: Stat | None) -> str | None:
    """lower / tie / higher against the baseline beyond the seeds' spread; "reference" for the baseline itself,
    "diverged" when a seed of the experiment's best setting diverged (its mean is infinite, or nan with none left)."""
    if base is None:
        return None
    if not math.isfinite(val.mean):
        return "diverged"
    return "reference" if exp == TARGET_EXP else VERDICT[compare(val, base, LOSS_TOL)]


def comparison(folders: list[str | Path], labels: list[str] | None = None) -> dict[str, Any]:
    """Every number of the comparison: per folder its label, context, machine and target; per experiment and
    folder its lr multiplier, final val loss, seconds to the target, ranks and verdict against the baseline."""
    if len(folders) < 2:
        raise UserError("modman compare needs at least two folders, e.g. modman compare runs/a runs/b")
    reports = [load_report(f) for f in folders]
    given = labels is not None
    labels = labels if labels is not None else [label_of(r, f) for r, f in zip(reports, folders)]
    if len(labels) != len(folders) or len(set(labels)) != len(labels):
        got = f"got {', '.join(labels)}" if given else f"their corpora would label them {', '.join(labels)}"
        raise UserError(f"--labels: give one distinct label per folder ({len(folders)} folders); {got}")
    exps = sorted(
        {e for r in reports for e in r["experiments"]},
        key=lambda e: (TRAIN_EXPERIMENTS.index(e) if e in TRAIN_EXPERIMENTS else len(TRAIN_EXPERIMENTS), e),
    )
    columns: list[dict[str, Any]] = []
    for label, report in zip(labels, reports):
        ex = report["experiments"]
        val = {e: _stat(ex[e]["final_val_loss"]) for e in ex}
        secs = {e: _stat(ex[e].get("seconds_to_target")) for e in ex}
        base = val.get("baseline")
        columns.append(
            {
                "label": label,
                "context": report.get("context"),
                "machine": report.get("machine"),
                "target": report.get("target"),
                "val_rank": _ranks({e: s.mean for e, s in val.items()}),
                "seconds_rank": _ranks({e: s.mean for e, s in secs.items()}),
                "val": val,
                "seconds": secs,
                "lr": {e: ex[e].get("lr_multiplier") for e in ex},
                "timed": {e: bool(ex[e].get("timed_run")) for e in ex},
                "vs_baseline": {e: _vs_baseline(e, val[e], base) for e in ex},
            }
        )
    rows = []
    for e in exps:
        verdicts = [c["vs_baseline"].get(e) for c in columns]
        known = [v for v in verdicts if v is not None]
        missing = [c["label"] for c in columns if e not in c["val"]]
        rows.append(
            {
                "experiment": e,
                "per_folder": {
                    c["label"]: {
                        "lr_multiplier": c["lr"].get(e),
                        "final_val_loss": stat_json(c["val"][e]) if e in c["val"] else None,
                        "val_rank": c["val_rank"].get(e),
                        "seconds_to_target": stat_json(c["seconds"][e]) if e in c["seconds"] else None,
                        "seconds_rank": c["seconds_rank"].get(e),
                        "timed": c["timed"].get(e),
                        "vs_baseline": c["vs_baseline"].get(e),
                    }
                    for c in columns
                },
                "not_run": missing,
                "holds": len(known) == len(columns) and len(set(known)) == 1 and e != TARGET_EXP,
            }
        )
    winners = {}
    for c in columns:
        per_kind = {}
        for kind, stats, tol in (
            ("equal_steps", c["val"], LOSS_TOL),
            ("equal_time", c["seconds"], seconds_tol(c["seconds"])),
        ):
            first, second, beyond = leader(stats, tol)
            per_kind[kind] = {"winner": first, "runner_up": second, "beyond_spread": beyond}
        winners[c["label"]] = per_kind
    return {
        "folders": [str(f) for f in folders],
        "columns": [{k: c[k] for k in ("label", "context", "machine", "target")} for c in columns],
        "winners": winners,
        "rows": rows,
        "rule": f"vs baseline: lower / higher only beyond the seeds' spread (sd sum, at least {LOSS_TOL}), else tie",
    }


def _cell(entry: dict[str, Any] | None, spec: str, rank: int | None, unit: str = "") -> str:
    if not entry or (entry["mean"] is None and not entry["infinite"]):
        return "-"
    if entry["infinite"]:
        return "never"
    text = f"{entry['mean']:{spec}}" + (f" ± {entry['sd']:{spec}}" if entry["n"] > 1 else "") + unit
    return f"{text} ({rank})" if rank else text


def render_comparison(result: dict[str, Any]) -> str:
    """Markdown: who wins per folder, then one row per experiment with every folder's numbers."""
    labels = [c["label"] for c in result["columns"]]
    lines = ["# Does the answer hold across corpora?", ""]
    for kind, words in (("equal_steps", "Equal steps (lowest final val loss)"), ("equal_time", "Equal time")):
        who = [result["winners"][label][kind] for label in labels]
        parts = []
        for w, label in zip(who, labels):
            if w["winner"] is None:
                parts.append(f"none on {label}")
                continue
            call = ""
            if w["runner_up"] is not None:
                call = (
                    f" (ahead of {w['runner_up']} beyond the spread)"
                    if w["beyond_spread"]
                    else (f" (a tie with {w['runner_up']} under the spread rule)")
                )
            parts.append(f"**{w['winner']}** on {label}{call}")
        same = "the same everywhere" if len({w["winner"] for w in who}) == 1 else "not the same everywhere"
        lines.append(f"- {words}: " + "; ".join(parts) + f" — {same}.")
    lines.append("")
    header = ["experiment"]
    for label in labels:
        header += [f"{label}: lr", f"{label}: final val (rank)", f"{label}: s to baseline's loss (rank)"]
    header.append("vs baseline, per corpus")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        cells = [row["experiment"]]
        for label in labels:
            f = row["per_folder"][label]
            cells.append("-" if f["lr_multiplier"] is None else f"{f['lr_multiplier']:g}x")
            cells.append(_cell(f["final_val_loss"], ".3f", f["val_rank"]))
            seconds = _cell(f["seconds_to_target"], ".0f", f["seconds_rank"])
            cells.append(seconds + ("" if f["timed"] or seconds == "-" else " *"))
        verdicts = " / ".join(row["per_folder"][label]["vs_baseline"] or "not run" for label in labels)
        cells.append(verdicts + (" (holds)" if row["holds"] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "lr: the multiplier of the experiment's default lr its best setting uses. Seconds: training seconds to reach "
        "that corpus's baseline's final val loss (mean ± sd over seeds); * marks seconds not from a timed run. "
        f"Rule: {result['rule']}.",
        "",
        "Machines: "
        + "; ".join(f"{c['label']}: {machine_text(c['machine'])}" for c in result["columns"])
        + ". Folders: "
        + ", ".join(result["folders"])
        + ".",
    ]
    return "\n".join(lines) + "\n"


def write_comparison(folders: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """Write ``out/comparison.md`` and ``out/comparison.json``; returns the markdown's path."""
    result = comparison(folders, labels)
    out = Path(out)
    write_json_atomic(out / "comparison.json", result)
    write_text_atomic(out / "comparison.md", render_comparison(result))
    return out / "comparison.md"
