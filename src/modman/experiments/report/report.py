"""``modman analyze DIR``: ``DIR/report/report.md`` + PNG figures (and with ``--html`` one self-contained page).

The report is built once as a list of blocks (heading, paragraph, table, figure, list) and rendered to
Markdown or HTML, so both say the same thing.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..common.files import write_json_atomic, write_text_atomic
from ..llm.recipes import TRAIN_EXPERIMENTS
from .analysis import (
    Group,
    attach_timed,
    best_groups,
    check_one_context,
    group_runs,
    load_runs,
    loss_spike,
    norm_growth,
    relative_speed,
    worst_condition,
)
from .figures import write_figures
from .hypotheses import LOSS_TOL, judge_all
from .numbers import LR_HEADER, TARGET_EXP, family_rows, headline, lr_rows, summary_json, to_target

__all__ = ["machine_text", "analyze", "build_blocks", "render_markdown", "render_html"]

Block = tuple  # ("h", level, text) | ("p", text) | ("table", header, rows) | ("img", file, caption) | ("ul", items)


def machine_text(machine: dict[str, Any] | None) -> str:
    """The machine of a report's timings, as one phrase: cpu (cores), platform, device, threads, torch."""
    m = machine or {}
    threads = m.get("threads")
    parts = [
        m.get("cpu") and (f"{m['cpu']} ({m['cpus']} cores)" if m.get("cpus") else m["cpu"]),
        m.get("platform"),
        m.get("device"),
        threads and f"{threads} thread{'s' if threads != 1 else ''}",
        m.get("torch") and f"torch {m['torch']}",
    ]
    known = [str(p) for p in parts if p]
    return ", ".join(known) if known else "the machine of the runs"


def _timing_text(best: dict[str, Group], machine: dict[str, Any] | None) -> str:
    timed = [e for e, g in best.items() if g.timed]
    where = machine_text(machine)
    if timed and len(timed) == len(best):
        return (
            f"the seconds and tokens/s by each best setting's timed run: trained again on {where}, one run "
            "after another with the machine otherwise idle"
        )
    if timed:
        return (
            f"the seconds and tokens/s by the timed runs of {', '.join(timed)} ({where}, one at a time, machine "
            "otherwise idle); the others' by their own runs, which may have shared the machine: rough"
        )
    return (
        f"the seconds as the runs measured them on {where}; runs that shared the machine measured slow, so "
        "compare these only when the runs ran one at a time (a tune's timed phase does that)"
    )


def _ordered(best: dict[str, Group]) -> dict[str, Group]:
    order = {e: i for i, e in enumerate(TRAIN_EXPERIMENTS)}
    return dict(sorted(best.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _reach(stat) -> str:
    if stat is None or math.isnan(stat.mean):
        return "-"
    return "never" if math.isinf(stat.mean) else stat.fmt(".0f")


def summary_rows(best: dict[str, Group]) -> list[list[str]]:
    rows = []
    _, reach = to_target(best)
    for exp, g in best.items():
        tps = g.tokens_per_sec
        ppl = g.stat(
            lambda r: math.inf if r.diverged or r.summary.get("final_val_ppl") is None else r.summary["final_val_ppl"]
        )
        rows.append(
            [
                exp,
                g.label,
                str(len(g.runs)),
                f"{g.diverged}/{len(g.runs)}",
                g.val_loss.fmt(),
                _reach(reach[exp][0] if exp in reach else None),
                _reach(reach[exp][1] if exp in reach else None),
                ppl.fmt(".2f"),
                f"{tps.mean:.0f}" if math.isfinite(tps.mean) else "-",
                relative_speed(g, best),
                g.stat(worst_condition).fmt(".2f"),
                g.stat(norm_growth).fmt(".3f"),
                g.stat(loss_spike).fmt(".3f"),
            ]
        )
    return rows


SUMMARY_HEADER = [
    "experiment",
    "best setting",
    "seeds",
    "diverged",
    "final val loss",
    f"steps to {TARGET_EXP}'s final val",
    "seconds to it",
    "val ppl",
    "tokens/s",
    "vs baseline",
    "worst cond. (attn/FFN)",
    "norm growth",
    "largest loss spike",
]


def build_blocks(
    root: Path,
    runs: list,
    problems: list[str],
    groups: list[Group],
    best: dict[str, Group],
    figures: dict[str, str],
    verdicts: list,
    context: dict[str, Any] | None = None,
    machine: dict[str, Any] | None = None,
) -> list[Block]:
    blocks: list[Block] = [("h", 1, f"modman report: {root}")]
    if context:
        shown = {k: ("embedded Shakespeare" if k == "data" and v is None else v) for k, v in context.items()}
        blocks.append(("p", "Runs: " + ", ".join(f"{k} {v}" for k, v in shown.items()) + "."))
    seeds = sorted({len(g.runs) for g in groups})
    blocks.append(
        (
            "p",
            f"{len(runs)} runs, {len(groups)} settings, {len(best)} experiments; seeds per setting: "
            f"{', '.join(map(str, seeds)) or '-'}. Each experiment is shown at its best setting (lowest "
            "mean final validation loss). Numbers are mean ± sample standard deviation over seeds; a "
            "difference is called only when it exceeds the sum of the two deviations (and at least "
            f"{LOSS_TOL} nats of loss when there is one seed).",
        )
    )
    if problems:
        blocks += [("h", 2, "Skipped"), ("ul", problems)]
    blocks += [
        ("h", 2, "Summary"),
        ("ul", headline(best, LOSS_TOL)),
        ("table", SUMMARY_HEADER, summary_rows(best)),
        (
            "p",
            f"Equal steps: the final val loss. Equal loss: the step at which the seeds' mean validation curve "
            f"reaches {TARGET_EXP}'s final val loss (linear between evaluations; never: not within the run) and the "
            "training seconds to that step; "
            f"{_timing_text(best, machine)}. Equal time in the list above: seconds within 5 % of each other tie. "
            "worst cond.: largest σ_max/σ_min among attention and FFN matrices at the end; norm growth: "
            "largest final / initial Frobenius norm among them; largest loss spike: largest rise of the "
            "logged train loss above its best value so far, after warmup.",
        ),
    ]
    family = family_rows(best, LOSS_TOL)
    if family:
        blocks += [
            ("h", 2, "Manifold Muon and the constrained-Muon family against Muon"),
            ("table", ["experiment", "final val loss", "muon_all", "verdict"], family),
        ]
    lr_table = lr_rows(groups, best)
    if lr_table:
        blocks += [
            ("h", 2, "Learning rates"),
            (
                "p",
                "Multipliers of each experiment's default lr that were tried (a tune scales the attention and "
                "FFN matrices' lrs; modular's whole-network lr), the best by mean final val loss among the "
                "settings with the most seeds, and whether it is interior to what was tried; in brackets the "
                "seeds behind each number. Figure lr_sweep.png draws the curves.",
            ),
            ("table", LR_HEADER, lr_table),
        ]
    if len(groups) > len(best):
        blocks += [
            ("h", 2, "Every setting"),
            (
                "table",
                ["experiment", "setting", "seeds", "diverged", "final val loss"],
                [[g.exp, g.label, str(len(g.runs)), f"{g.diverged}/{len(g.runs)}", g.val_loss.fmt()] for g in groups],
            ),
        ]
    blocks.append(("h", 2, "Hypotheses of the LLM experiment plan"))
    blocks.append(("table", ["hypothesis", "verdict", "why"], [[v.title, v.verdict, v.reason] for v in verdicts]))
    for v in verdicts:
        blocks += [("h", 3, v.title), ("p", f"Rule: {v.rule}")]
        if v.rows:
            blocks.append(("table", v.header, v.rows))
        blocks.append(("p", f"Verdict: **{v.verdict}** — {v.reason}."))
    blocks.append(("h", 2, "Figures"))
    blocks += [("img", name, caption) for name, caption in figures.items()]
    return blocks


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]))
        elif b[0] == "table":
            lines = ["| " + " | ".join(map(_md_cell, b[1])) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b[2]]
            out.append("\n".join(lines))
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}*")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then turn **bold** and `code` into tags (the only Markdown the blocks use)."""
    parts = html.escape(text).split("**")
    text = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks: list[Block], figure_dir: Path) -> str:
    """One page with the figures embedded as data: URIs (it can be mailed or attached as it is)."""
    body = []
    for b in blocks:
        if b[0] == "h":
            body.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            body.append(f"<p>{_inline(b[1])}</p>")
        elif b[0] == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif b[0] == "table":
            head = "".join(f"<th>{_inline(str(h))}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode((figure_dir / b[1]).read_bytes()).decode()
            body.append(
                f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(b[2])}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;"
        "padding:3px 8px;text-align:left}th{background:#f3f3f3}img{max-width:100%}figcaption{font-style:italic}"
    )
    title = html.escape(blocks[0][2]) if blocks and blocks[0][0] == "h" else "modman report"
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title><style>{style}</style>'
        f"</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def analyze(root: str | Path, *, html_page: bool = False) -> dict[str, Any]:
    """Write ``root/report/`` and return {"report": path, "html": path|None, "runs": n, "skipped": [...],
    "verdicts"}."""
    root = Path(root)
    runs, problems = load_runs(root)
    if not runs:
        detail = ("; ".join(problems)) if problems else "no folder with summary.json and metrics.jsonl"
        raise UserError(
            f"{root}: no finished runs to analyze ({detail}); train some with modman train or "
            "modman sweep --out " + str(root)
        )
    context = check_one_context(runs)
    timed, timed_problems = load_runs(root, timed=True)
    groups = group_runs(runs)
    if timed:
        check_one_context(runs + timed)  # a timed run of another corpus or budget is refused like any run
        problems += timed_problems + attach_timed(groups, timed)
    clock = next((g.timed for g in groups if g.timed), runs[0])
    machine = {
        k: clock.summary.get("versions", {}).get(k) for k in ("cpu", "cpus", "platform", "device", "threads", "torch")
    }
    best = _ordered(best_groups(groups))
    out = root / "report"
    figures = write_figures(best, groups, out)
    verdicts = judge_all(best, groups)
    blocks = build_blocks(root, runs, problems, groups, best, figures, verdicts, context, machine)
    write_text_atomic(out / "report.md", render_markdown(blocks))
    table: dict[str, dict[str, Any]] = {
        r[0]: {"table": dict(zip(SUMMARY_HEADER[1:], r[1:]))} for r in summary_rows(best)
    }
    for row in lr_rows(groups, best):  # every table's cells, as shown
        table[row[0]]["learning_rates"] = dict(zip(LR_HEADER[1:], row[1:]))
    for row in family_rows(best, LOSS_TOL):
        table[row[0]]["against_muon_all"] = row[-1]
    data = summary_json(context, machine, best, groups, verdicts, table)
    data["headline"] = headline(best, LOSS_TOL)  # the report's first lines, as shown
    write_json_atomic(out / "summary.json", data)
    page = None
    if html_page:
        page = out / "report.html"
        write_text_atomic(page, render_html(blocks, out))
    return {
        "report": out / "report.md",
        "html": page,
        "runs": len(runs),
        "skipped": problems,
        "verdicts": {v.key: v.verdict for v in verdicts},
    }
