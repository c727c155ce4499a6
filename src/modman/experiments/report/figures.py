"""The figures of ``modman analyze`` (matplotlib, Agg backend): one PNG per question, experiments in fixed colours.

Each function takes the best group of every experiment (``analysis.best_groups``) and writes one file;
curves are the mean over a group's seeds with a band from the lowest to the highest seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..llm.recipes import TRAIN_EXPERIMENTS
from .analysis import MATRIX_ROLES, Group, final_spectra, train_curve, val_curve

__all__ = ["FIGURES", "write_figures"]

ROLE_PANELS = ("attention", "ffn", "embedding", "head")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Beyond tab10's ten colours: distinct ones for the experiments after the tenth.
_EXTRA_COLORS = ("black", "darkgoldenrod", "maroon", "navy", "darkgreen")


def _color(exp: str):
    """One colour per experiment, the same in every figure; no two of TRAIN_EXPERIMENTS share one."""
    import matplotlib

    names = list(TRAIN_EXPERIMENTS)
    if exp not in names:
        return matplotlib.colormaps["tab10"](sum(map(ord, exp)) % 10)
    index = names.index(exp)
    return matplotlib.colormaps["tab10"](index) if index < 10 else _EXTRA_COLORS[(index - 10) % len(_EXTRA_COLORS)]


def _mean_band(curves: list[list[tuple[float, float]]]):
    """Mean, min and max over seeds at the x values every curve shares."""
    common = sorted(set.intersection(*(set(x for x, _ in c) for c in curves))) if curves else []
    if not common:
        return np.array([]), np.array([]), np.array([]), np.array([])
    ys = np.array([[dict(c)[x] for x in common] for c in curves], dtype=float)
    return np.array(common, dtype=float), ys.mean(0), ys.min(0), ys.max(0)


def _plot_band(ax, curves, exp, label=None, **kw):
    x, mean, lo, hi = _mean_band(curves)
    if len(x):
        ax.plot(x, mean, color=_color(exp), label=label or exp, **kw)
        if len(curves) > 1:
            ax.fill_between(x, lo, hi, color=_color(exp), alpha=0.2, linewidth=0)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    _plt().close(fig)
    tmp.replace(path)
    return path


def _seconds_at(run, steps):
    curve = train_curve(run)
    xs = [0] + [s for s, _, _ in curve]
    ts = [0.0] + [t for _, _, t in curve]
    return np.interp(steps, xs, ts)


def loss_curves(best: dict[str, Group], path: Path, against: str) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn: list[list[list[tuple[float, float]]]] = [[], []]
    for exp, g in best.items():
        train: list[list[tuple[float, float]]]
        if against == "step":
            train = [[(s, loss) for s, loss, _ in train_curve(r)] for r in g.runs]
            val = [[(float(s), v) for s, v in val_curve(r)] for r in g.runs]
        else:  # wall time differs per seed: one run, the timed one when there is one
            one = [g.timed] if g.timed else g.runs[:1]
            train = [[(t, loss) for _, loss, t in train_curve(r)] for r in one]
            val = [list(zip(_seconds_at(r, [s for s, _ in val_curve(r)]), [v for _, v in val_curve(r)])) for r in one]
        _plot_band(axes[0], train, exp)
        _plot_band(axes[1], val, exp, marker="o", markersize=3)
        drawn[0] += train
        drawn[1] += val
    for ax, curves in zip(axes, drawn):
        _zoom_on_the_end(ax, curves)
    for ax, what in zip(axes, ("train loss", "validation loss")):
        ax.set_xlabel("step" if against == "step" else "training seconds (the timed run, else the first seed)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Loss against {'step' if against == 'step' else 'wall time'} (best setting of each experiment)")
    return _save(fig, path)


def _zoom_on_the_end(ax, curves: list[list[tuple[float, float]]]) -> None:
    """Clip the y axis above at the highest loss any curve still has a fifth of its way in: the first steps'
    plunge from ~5.5 would squash the differences the comparison is about."""
    late = [c[len(c) // 5][1] for c in curves if len(c) >= 5 and math.isfinite(c[len(c) // 5][1])]
    ends = [min(v for _, v in c) for c in curves if c and all(math.isfinite(v) for _, v in c)]
    if late and ends:
        top, bottom = max(late), min(ends)
        ax.set_ylim(bottom - 0.05 * (top - bottom), top)


def _panel_grid(n: int, width: float = 4.0, height: float = 3.2):
    plt = _plt()
    cols = min(3, max(1, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


# Singular values below this are drawn at it (a byte embedding's unused rows give σ ~ 1e-28).
SPECTRUM_FLOOR = 1e-6


def _spectrum_bars(ax, i: int, s: dict, color) -> None:
    """One matrix's spectrum at x = i: min–max line, q25–q75 bar, median tick (clipped at SPECTRUM_FLOOR)."""

    def lift(v):
        return max(v, SPECTRUM_FLOOR)

    ax.vlines(i, lift(s["sv_min"]), lift(s["sv_max"]), color=color, linewidth=1)
    ax.vlines(i, lift(s["sv_q25"]), lift(s["sv_q75"]), color=color, linewidth=4)
    ax.plot(i, lift(s["sv_median"]), "k_", markersize=6)


def spectra_final(best: dict[str, Group], path: Path) -> Path:
    """One panel per experiment with its attention and FFN matrices on their own scale; a last panel with every
    experiment's embedding and head (whose tiny singular values would squash the others)."""
    fig, axes = _panel_grid(len(best) + 1, 4.5)
    for ax, (exp, g) in zip(axes, best.items()):
        recs = [s for s in final_spectra(g.runs[0]) if s.get("role") in MATRIX_ROLES]
        for i, s in enumerate(recs):
            _spectrum_bars(ax, i, s, _color(exp))
        ax.set_yscale("log")
        if recs:  # at least a decade: spectra held at 1 (Stiefel) show as points, not as magnified rounding
            lo = max(min(s["sv_min"] for s in recs), SPECTRUM_FLOOR)
            hi = max(max(s["sv_max"] for s in recs), lo)
            if hi / lo < 10:
                mid = math.sqrt(hi * lo)
                ax.set_ylim(mid / math.sqrt(10), mid * math.sqrt(10))
        ax.set_title(f"{exp} (step {recs[0]['step'] if recs else '-'})", fontsize=9)
        ax.set_xlabel("attention / FFN matrix, in model order", fontsize=8)
        ax.set_ylabel("singular values", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    ax = axes[len(best)]
    ticks: list[str] = []
    for exp, g in best.items():
        for s in final_spectra(g.runs[0]):
            if s.get("role") in ("embedding", "head"):
                _spectrum_bars(ax, len(ticks), s, _color(exp))
                ticks.append(f"{exp} {s['role']}")
    ax.set_yscale("log")
    ax.set_xticks(range(len(ticks)), ticks, rotation=90, fontsize=6)
    ax.set_title(f"embedding and head (values below {SPECTRUM_FLOOR:g} drawn at it)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Singular values at the end: min–max line, q25–q75 bar, median tick (first seed)")
    return _save(fig, path)


def _legend_panel(axes: list, n: int) -> None:
    """The legend of axes[0] in the free panel axes[n] (a grid made with n + 1 panels), off the curves."""
    panel = axes[n]
    panel.set_visible(True)
    panel.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    panel.legend(handles, labels, loc="center", fontsize=8, ncol=2, frameon=False)


def _by_step(run, roles, key, reduce):
    steps: dict[int, list[float]] = {}
    for s in run.spectra:
        if s.get("role") in roles:
            steps.setdefault(s["step"], []).append(s[key])
    return [(st, reduce(v)) for st, v in sorted(steps.items())]


def spectra_evolution(best: dict[str, Group], path: Path) -> Path:
    fig, axes = _panel_grid(len(best), 4.5)
    for ax, (exp, g) in zip(axes, best.items()):
        for key, reduce, style, label in (
            ("sv_max", max, "-", "largest σ"),
            ("sv_median", np.median, "--", "median σ"),
            ("sv_min", min, ":", "smallest σ"),
        ):
            _plot_band(ax, [_by_step(r, MATRIX_ROLES, key, reduce) for r in g.runs], exp, label=label, linestyle=style)
        ax.set_yscale("log")
        ax.set_title(exp, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Singular values of the attention and FFN matrices during training")
    return _save(fig, path)


def fro_norms(best: dict[str, Group], path: Path) -> Path:
    fig, axes = _panel_grid(len(ROLE_PANELS) + 1, 4.5)
    for ax, role in zip(axes, ROLE_PANELS):
        for exp, g in best.items():
            curves = [_by_step(r, (role,), "fro_norm", lambda v: math.sqrt(sum(x * x for x in v))) for r in g.runs]
            _plot_band(ax, curves, exp)
        ax.set_title(f"{role}: Frobenius norm of all its matrices", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    _legend_panel(axes, len(ROLE_PANELS))
    return _save(fig, path)


def grad_norms(best: dict[str, Group], path: Path) -> Path:
    fig, axes = _panel_grid(len(ROLE_PANELS) + 1, 4.5)
    for ax, role in zip(axes, ROLE_PANELS):
        for exp, g in best.items():
            curves = [
                [(m["step"], m["grad_norm"][role]) for m in r.metrics if role in (m.get("grad_norm") or {})]
                for r in g.runs
            ]
            _plot_band(ax, curves, exp)
        ax.set_title(f"{role}: gradient norm", fontsize=9)
        ax.set_yscale("log")
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    _legend_panel(axes, len(ROLE_PANELS))
    return _save(fig, path)


# Condition numbers above 1/ε of float32 (~8.4e6) only say "singular at float32 precision" (a byte head's unused
# rows give 1e32..1e48); the figure draws them at this cap so the meaningful range keeps its scale.
COND_CAP = 1.0 / float(np.finfo(np.float32).eps)


def _largest(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def condition_numbers(best: dict[str, Group], path: Path) -> Path:
    """Per role, the largest condition number σ_max/σ_min of its matrices against step (mean band over seeds),
    drawn at most at COND_CAP; the legend sits in a panel of its own."""
    fig, axes = _panel_grid(len(ROLE_PANELS) + 1, 4.5)
    capped = False
    for ax, role in zip(axes, ROLE_PANELS):
        here = False
        for exp, g in best.items():
            # null: σ_min = 0 (a zero-initialised matrix), no finite number to draw
            curves = [_by_step(r, (role,), "condition_number", _largest) for r in g.runs]
            here |= any(y > COND_CAP for c in curves for _, y in c if y is not None)
            _plot_band(ax, [[(x, min(y, COND_CAP)) for x, y in c if y is not None] for c in curves], exp)
        if here:
            ax.axhline(COND_CAP, color="grey", lw=0.8, ls=":")
        capped |= here
        ax.set_yscale("log")
        ax.set_title(f"{role}: largest condition number", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    _legend_panel(axes, len(ROLE_PANELS))
    cap = f" (dotted: values ≥ {COND_CAP:.1e}, singular at float32 precision, drawn there)" if capped else ""
    fig.suptitle("Condition number σ_max/σ_min per role during training" + cap, fontsize=11)
    return _save(fig, path)


def tokens_per_sec(best: dict[str, Group], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    exps = list(best)
    stats = [best[e].tokens_per_sec for e in exps]
    ax.bar(range(len(exps)), [s.mean for s in stats], yerr=[s.sd for s in stats], color=[_color(e) for e in exps])
    ax.set_xticks(range(len(exps)), exps, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("training tokens / s")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def peak_lr(group: Group) -> float:
    """The largest scheduled lr of the attention matrices in the group's first run (the lr it was swept at)."""
    lrs = [m["lr"]["attention"] for m in group.runs[0].metrics if "attention" in (m.get("lr") or {})]
    return max(lrs) if lrs else math.nan


def lr_sweep(groups: list[Group], path: Path, best: dict[str, Group] | None = None) -> Path:
    """A panel per experiment tried at several lrs: final val loss against peak lr (one curve per weight decay),
    the best setting starred, diverged settings as x on top, and the title saying when the best is on the edge."""
    best = best or {}
    order = list(dict.fromkeys([*best, *(g.exp for g in groups)]))  # the report's order, then the rest
    exps = [e for e in order if sum(h.exp == e for h in groups) > 1]
    fig, axes = _panel_grid(len(exps), 3.6, 2.8)
    for ax, exp in zip(axes, exps):
        by_wd: dict = {}
        for g in groups:
            if g.exp == exp:
                by_wd.setdefault(g.settings.get("weight_decay"), []).append(g)
        for i, (wd, gs) in enumerate(sorted(by_wd.items(), key=lambda kv: str(kv[0]))):
            pts = sorted((peak_lr(g), g.val_loss) for g in gs if math.isfinite(g.val_loss.mean))
            lost = [peak_lr(g) for g in gs if not math.isfinite(g.val_loss.mean) and math.isfinite(peak_lr(g))]
            if lost:  # diverged settings: an x near the top at their lr
                ax.plot(
                    lost, [0.96] * len(lost), "x", ms=9, mew=2, color=_color(exp), transform=ax.get_xaxis_transform()
                )
            if pts:
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1].mean for p in pts],
                    yerr=[p[1].sd for p in pts],
                    capsize=3,
                    color=_color(exp),
                    marker="o",
                    markersize=4,
                    linestyle=("-", "--", ":", "-.")[i % 4],
                    label=f"wd {wd}",
                )
        title = exp
        b = best.get(exp)
        if b is not None and math.isfinite(b.val_loss.mean):
            ax.plot([peak_lr(b)], [b.val_loss.mean], "*", ms=14, color="gold", mec="black", zorder=5)
            tried = [peak_lr(g) for g in by_wd[b.settings.get("weight_decay")]]
            if peak_lr(b) in (min(tried), max(tried)):
                title += " (best on the edge)"
        ax.set_title(title, fontsize=9, color="firebrick" if "edge" in title else "black")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        if len(by_wd) > 1:
            ax.legend(fontsize=6)
    from matplotlib.ticker import NullFormatter

    for ax in axes[: len(exps)]:
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=7)
    fig.supxlabel("peak lr of the attention matrices", fontsize=9)
    fig.supylabel("final val loss (mean ± sd over seeds)", fontsize=9)
    fig.suptitle("Final validation loss against lr (★ best setting; x on top: diverged)", fontsize=10)
    return _save(fig, path)


FIGURES = {
    "loss_vs_step.png": ("Train and validation loss against step.", lambda b, g, p: loss_curves(b, p, "step")),
    "loss_vs_time.png": ("Train and validation loss against training time.", lambda b, g, p: loss_curves(b, p, "time")),
    "spectra_final.png": (
        "Singular values at the end: attention/FFN per experiment, embedding and head apart.",
        lambda b, g, p: spectra_final(b, p),
    ),
    "spectra_evolution.png": (
        "Singular values of the attention/FFN matrices during training.",
        lambda b, g, p: spectra_evolution(b, p),
    ),
    "fro_norm.png": ("Frobenius norm per role against step.", lambda b, g, p: fro_norms(b, p)),
    "grad_norm.png": ("Gradient norm per role against step.", lambda b, g, p: grad_norms(b, p)),
    "condition_number.png": (
        "Largest condition number per role (attention, FFN, embedding, head) against step.",
        lambda b, g, p: condition_numbers(b, p),
    ),
    "tokens_per_sec.png": ("Training throughput per experiment.", lambda b, g, p: tokens_per_sec(b, p)),
    "lr_sweep.png": (
        "Final validation loss against learning rate, a panel per experiment (every setting; ★ the best).",
        lambda b, g, p: lr_sweep(g, p, b),
    ),
}


def write_figures(best: dict[str, Group], groups: list[Group], out: Path) -> dict[str, str]:
    """Write every figure into ``out``; returns {file name: caption}. ``lr_sweep.png`` only when lrs vary."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    several_lrs = any(sum(h.exp == g.exp for h in groups) > 1 for g in groups)
    for name, (caption, draw) in FIGURES.items():
        if name == "lr_sweep.png" and not several_lrs:
            continue
        draw(best, groups, out / name)
        written[name] = caption
    return written
