"""modman analyze: loading runs, groups and spread, the H1–H5 verdicts on synthetic runs, figures, bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from modman.cli import main
from modman.experiments.llm.recipes import EXPERIMENTS
from modman.experiments.report import analyze
from modman.experiments.report.analysis import (
    Stat,
    best_groups,
    compare,
    group_runs,
    load_runs,
    loss_spike,
    norm_growth,
)
from modman.experiments.report.figures import FIGURES
from modman.experiments.report.hypotheses import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, judge_all

MATRICES = {
    "layers.0.attention.q.weight": "attention",
    "layers.0.feed_forward.w1.weight": "ffn",
    "tok_embeddings.weight": "embedding",
    "lm_head.weight": "head",
}


def make_run(
    root: Path,
    exp: str,
    *,
    seed: int = 0,
    val: float = 2.0,
    spike: float = 0.0,
    growth: float = 1.0,
    wd: float = 0.1,
    lr_scale: float = 1.0,
    diverged: bool = False,
    tps: float = 1000.0,
    seconds_per_step: float = 0.01,
    preset: str = "tiny",
) -> Path:
    """A run folder in the training framework's format, with the numbers the verdicts read set by hand."""
    run = root / f"{exp}--lr-{lr_scale}x--wd-{wd}--seed-{seed}"
    run.mkdir(parents=True)
    steps = list(range(10, 110, 10))
    losses = [3.0 - 0.8 * i / len(steps) for i in range(len(steps))]
    losses[6] += spike  # after warmup (10 steps)
    metrics = [{"step": 0, "val_loss": 3.2, "val_ppl": math.exp(3.2)}]
    for i, (step, loss) in enumerate(zip(steps, losses)):
        rec = {
            "step": step,
            "train_loss": loss,
            "lr": {r: 0.01 * lr_scale for r in set(MATRICES.values())},
            "grad_norm": {r: 1.0 / (i + 1) for r in set(MATRICES.values())},
            "tokens_per_sec": tps,
            "train_seconds": step * seconds_per_step,
        }
        if step in (50, 100):
            rec.update(val_loss=val if step == 100 else 2.5, val_ppl=math.exp(val))
        metrics.append(rec)
    spectra = []
    for step in (0, 50, 100):
        for name, role in MATRICES.items():
            f = 1.0 + (growth - 1.0) * step / 100 if role in ("attention", "ffn") else 1.0
            spectra.append(
                {
                    "step": step,
                    "name": name,
                    "role": role,
                    "rule": "adamw",
                    "shape": [8, 8],
                    "sv_min": 0.1 * f,
                    "sv_q10": 0.2 * f,
                    "sv_q25": 0.3 * f,
                    "sv_median": 0.5 * f,
                    "sv_q75": 0.7 * f,
                    "sv_q90": 0.9 * f,
                    "sv_max": f,
                    "fro_norm": 2.0 * f,
                    "condition_number": 10.0,
                }
            )
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run / "spectra.jsonl").write_text("".join(json.dumps(s) + "\n" for s in spectra))
    config = {
        "exp": exp,
        "max_steps": 100,
        "preset": preset,
        "batch_size": 4,
        "lr": None,
        "lr_scale": lr_scale,
        "weight_decay": wd,
        "warmup_steps": 10,
        "seed": seed,
        "out": str(root),
        "name": run.name,
    }
    summary = {
        "experiment": exp,
        "status": "diverged" if diverged else "finished",
        "steps": 100,
        "final_train_loss": losses[-1],
        "final_val_loss": None if diverged else val,
        "final_val_ppl": None if diverged else math.exp(val),
        "tokens_per_sec": tps,
        "config": config,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


# A folder where every hypothesis is supported (two seeds, spread 0.005 on the loss).
SUPPORTING = {
    "baseline": dict(val=2.00, spike=0.20, growth=1.50, tps=2000),
    "muon_all": dict(val=1.80, spike=0.0),
    "muon_attention": dict(val=1.85),
    "muon_ffn": dict(val=1.95),
    "stiefel_all": dict(val=1.90),
    "stiefel_attention": dict(val=1.92),
    "stiefel_ffn": dict(val=1.99),
    "spectral_all": dict(val=1.95),
    "manifold_muon": dict(val=1.79, tps=500),
    "spectral_sphere": dict(val=1.82),
    "hyperball": dict(val=1.83),
    "spel": dict(val=1.84),
}


def build(root: Path, changes: dict | None = None, *, seeds=(0, 1), extra=()) -> Path:
    table = {e: dict(v) for e, v in SUPPORTING.items()}
    for exp, kw in (changes or {}).items():
        table[exp].update(kw)
    for exp, kw in table.items():
        for s in seeds:
            make_run(root, exp, seed=s, **{**kw, "val": kw.get("val", 2.0) + 0.005 * s})
    for exp, kw in extra:
        for s in seeds:
            make_run(root, exp, seed=s, **{**kw, "val": kw.get("val", 2.0) + 0.005 * s})
    return root


def verdicts(root: Path) -> dict[str, str]:
    runs, problems = load_runs(root)
    assert not problems
    groups = group_runs(runs)
    return {v.key: v.verdict for v in judge_all(best_groups(groups), groups)}


WD0 = (("stiefel_all", dict(val=1.90, wd=0.0)), ("manifold_muon", dict(val=1.79, wd=0.0, tps=500)))


def test_every_hypothesis_supported_then_each_flips(tmp_path):
    assert verdicts(build(tmp_path / "all", extra=WD0)) == {f"H{i}": SUPPORTED for i in range(1, 6)}
    flips = {
        "H1": {"muon_all": dict(val=1.80, spike=0.5)},
        "H2": {"stiefel_all": dict(val=1.90, growth=1.3)},
        "H3": {"muon_attention": dict(val=1.97), "stiefel_attention": dict(val=2.05)},
        "H4": {"manifold_muon": dict(val=1.88, tps=500)},
    }
    for key, change in flips.items():
        # (a changed experiment keeps one weight decay: its unchanged wd-0 runs could be its best setting)
        got = verdicts(build(tmp_path / key, change, extra=[e for e in WD0 if e[0] not in change]))
        assert got[key] == NOT_SUPPORTED, (key, got)
        assert all(v == SUPPORTED for k, v in got.items() if k != key), (key, got)
    worse_without_decay = (("stiefel_all", dict(val=2.10, wd=0.0)), WD0[1])
    got = verdicts(build(tmp_path / "H5", extra=worse_without_decay))
    assert got["H5"] == NOT_SUPPORTED and got["H1"] == SUPPORTED


def test_a_difference_within_the_seed_spread_is_not_called(tmp_path):
    # attention 0.02 below FFN: called with one seed (floor 0.01), not when the seeds spread by 0.07 each.
    change = {"muon_attention": dict(val=1.93), "stiefel_attention": dict(val=1.97)}
    assert verdicts(build(tmp_path / "one", change, seeds=(0,)))["H3"] == SUPPORTED
    root = build(tmp_path / "noisy", change, seeds=(0,))
    for exp in ("muon_attention", "muon_ffn", "stiefel_attention", "stiefel_ffn"):
        make_run(root, exp, seed=1, val=SUPPORTING[exp]["val"] + 0.1)
    assert verdicts(root)["H3"] == INCONCLUSIVE


def test_missing_experiments_make_a_hypothesis_inconclusive_with_the_command(tmp_path):
    make_run(tmp_path, "baseline")
    runs, _ = load_runs(tmp_path)
    groups = group_runs(runs)
    out = judge_all(best_groups(groups), groups)
    assert [v.verdict for v in out] == [INCONCLUSIVE] * 5
    assert "muon_all" in out[0].reason and "modman sweep" in out[0].reason
    assert "--weight-decays 0,0.1" in out[4].reason


def test_groups_stats_and_best_setting(tmp_path):
    for s in (0, 1, 2):
        make_run(tmp_path, "muon_all", seed=s, val=2.0 + 0.1 * s, lr_scale=1.0)
        make_run(tmp_path, "muon_all", seed=s, val=1.5 + 0.1 * s, lr_scale=2.0)
    make_run(tmp_path, "muon_all", seed=0, lr_scale=4.0, diverged=True)
    groups = group_runs(load_runs(tmp_path)[0])
    assert sorted(g.label for g in groups) == ["lr_scale=1.0", "lr_scale=2.0", "lr_scale=4.0"]
    best = best_groups(groups)["muon_all"]
    assert best.label == "lr_scale=2.0" and len(best.runs) == 3
    assert best.val_loss.mean == pytest.approx(1.6) and best.val_loss.sd == pytest.approx(0.1)
    worst = next(g for g in groups if g.label == "lr_scale=4.0")
    assert math.isinf(worst.val_loss.mean) and worst.val_loss.fmt() == "diverged" and worst.diverged == 1
    assert compare(Stat(1.0, 0.1, 3), Stat(1.15, 0.1, 3), 0.01) == 0
    assert compare(Stat(1.0, 0.1, 3), Stat(1.25, 0.1, 3), 0.01) == -1
    assert compare(Stat(1.0, 0.0, 1), Stat(1.005, 0.0, 1), 0.01) == 0


def test_settings_are_listed_by_value_not_by_their_text(tmp_path):
    for lr_scale in (16.0, 2.0, 0.25, 8.0):
        make_run(tmp_path, "modular", lr_scale=lr_scale)
    labels = [g.label for g in group_runs(load_runs(tmp_path)[0])]
    assert labels == ["lr_scale=0.25", "lr_scale=2.0", "lr_scale=8.0", "lr_scale=16.0"]  # as text, 16 came before 2


def test_per_run_measures(tmp_path):
    make_run(tmp_path, "baseline", spike=0.3, growth=1.7)
    (run,) = load_runs(tmp_path)[0]
    assert loss_spike(run) == pytest.approx(0.3 - 0.08, abs=1e-9)  # rise above the best value so far (0.08/log step)
    assert norm_growth(run) == pytest.approx(1.7)


@pytest.mark.slow
def test_report_has_every_figure_and_section_and_html_is_self_contained(tmp_path):
    root = build(tmp_path, extra=WD0)
    result = analyze(root, html_page=True)
    report = result["report"].read_text()
    for key in ("## Summary", "## Every setting", "## Hypotheses of the LLM experiment plan", "## Figures"):
        assert key in report
    for title in ("H1: Muon", "H2: the Stiefel", "H3: attention", "H4: manifold Muon", "H5: weight decay"):
        assert f"### {title}" in report
    assert report.count("Verdict: **") == 5
    for name in FIGURES:
        assert (root / "report" / name).stat().st_size > 5000, name
        assert f"]({name})" in report
    assert all(f"| {e} |" in report for e in EXPERIMENTS)
    page = result["html"].read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES) and 'src="http' not in page
    assert "<strong>supported</strong>" in page


@pytest.mark.slow
def test_missing_or_corrupt_files_are_named_and_skipped(tmp_path, capsys):
    build(tmp_path, seeds=(0,))
    bad_metrics = make_run(tmp_path, "baseline", seed=7)
    (bad_metrics / "metrics.jsonl").write_text('{"step": 0}\nnot json\n')
    bad_summary = make_run(tmp_path, "baseline", seed=8)
    (bad_summary / "summary.json").write_text("{")
    unfinished = make_run(tmp_path, "baseline", seed=9)
    (unfinished / "summary.json").unlink()
    no_metrics = make_run(tmp_path, "muon_all", seed=9)
    (no_metrics / "metrics.jsonl").unlink()
    runs, problems = load_runs(tmp_path)
    assert len(runs) == len(SUPPORTING)
    text = "\n".join(problems)
    assert f"{bad_metrics / 'metrics.jsonl'}: line 2 is not JSON" in text
    assert f"{bad_summary / 'summary.json'}: not valid JSON" in text
    assert f"{unfinished / 'summary.json'}: not there: the run has not ended" in text
    assert f"{no_metrics}: no metrics.jsonl" in text
    assert main(["analyze", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "line 2 is not JSON" in err and "skipped" in err
    assert "## Skipped" in (tmp_path / "report" / "report.md").read_text()
    assert len(load_runs(tmp_path)[0]) == len(SUPPORTING)  # the report folder is not read as a run


def test_analyze_bad_folder_is_one_line(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope")]) == 2
    assert "not a folder of runs" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty")]) == 2
    assert "no finished runs to analyze" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_analyze_html_prints_the_verdicts(tmp_path, capsys):
    build(tmp_path, seeds=(0,), extra=WD0)
    assert main(["analyze", str(tmp_path), "--html"]) == 0
    out = capsys.readouterr().out
    assert f"report of 14 runs: {tmp_path / 'report' / 'report.html'}" in out
    assert f"beside it: {tmp_path / 'report' / 'report.md'}" in out
    assert "H1 supported" in out and "H5 supported" in out


def test_runs_from_older_versions_group_with_new_ones(tmp_path):
    make_run(tmp_path, "baseline", seed=0)  # a config without the newer settings
    new = make_run(tmp_path, "baseline", seed=1)
    summary = json.loads((new / "summary.json").read_text())
    summary["config"].update(dtype="float32", parallel="ddp")  # defaults / not a setting of the trajectory
    (new / "summary.json").write_text(json.dumps(summary))
    (group,) = group_runs(load_runs(tmp_path)[0])
    assert len(group.runs) == 2


def test_h3_needs_every_pair_to_agree(tmp_path):
    # muon pair tied, stiefel pair favours the FFN: not "every pair" -> inconclusive
    change = {"muon_attention": dict(val=1.95), "stiefel_attention": dict(val=2.05)}
    assert verdicts(build(tmp_path, change, seeds=(0,)))["H3"] == INCONCLUSIVE


def test_every_experiment_has_a_colour_of_its_own():
    from matplotlib.colors import to_rgba

    from modman.experiments.llm.recipes import TRAIN_EXPERIMENTS
    from modman.experiments.report.figures import _color

    colours = {to_rgba(_color(exp)) for exp in TRAIN_EXPERIMENTS}
    assert len(colours) == len(TRAIN_EXPERIMENTS)


def test_steps_and_seconds_to_the_baseline_loss_interpolate_between_evaluations(tmp_path):
    from modman.experiments.report.analysis import seconds_at_step, steps_to_reach

    make_run(tmp_path, "baseline", val=2.0)
    (run,), _ = load_runs(tmp_path)
    assert steps_to_reach(run, 2.5) == 50  # an evaluation hits it
    assert steps_to_reach(run, 2.25) == pytest.approx(75)  # halfway between 2.5 at 50 and 2.0 at 100
    assert steps_to_reach(run, 1.0) == math.inf
    assert seconds_at_step(run, 75) == pytest.approx(0.75) and seconds_at_step(run, math.inf) == math.inf
    from modman.experiments.report.analysis import mean_val_curve

    make_run(tmp_path, "baseline", seed=1, val=1.0)
    runs, _ = load_runs(tmp_path)
    assert mean_val_curve(runs) == [(0, 3.2), (50, 2.5), (100, 1.5)]
    assert steps_to_reach(mean_val_curve(runs), 2.0) == pytest.approx(50 + 50 * 0.5 / 1.0)


def test_a_tune_folder_reports_lrs_edges_and_every_number_in_json(tmp_path):
    for seed in (0, 1, 2):
        make_run(tmp_path, "baseline", seed=seed, val=2.0 + 0.001 * seed)
        make_run(tmp_path, "muon_all", seed=seed, val=1.80 + 0.001 * seed, lr_scale=2.0)
    make_run(tmp_path, "muon_all", seed=0, val=1.70, lr_scale=4.0)  # one seed only: informs, does not win
    make_run(tmp_path, "muon_all", seed=0, val=1.95, lr_scale=1.0)
    make_run(tmp_path, "hyperball", seed=0, val=1.79)
    for seed in (0, 1, 2):  # the no-decay twin of the best: not a point of its lr curve
        make_run(tmp_path, "muon_all", seed=seed, val=1.85, lr_scale=2.0, wd=0.0)
    analyze(tmp_path)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| muon_all | 1x, 2x, 4x | 2x | yes | 1.950 (1) / 1.801 ± 0.001 (3) / 1.700 (1) |" in report
    assert "| baseline |" in report and "steps to baseline's final val" in report
    assert "| hyperball | 1.790 | 1.801 ± 0.001 | lower than muon_all |" in report
    data = json.loads((tmp_path / "report" / "summary.json").read_text())
    muon = data["experiments"]["muon_all"]
    assert muon["lr_multiplier"] == 2.0 and muon["seeds"] == 3
    assert muon["final_val_loss"]["mean"] == pytest.approx(1.801)
    assert muon["steps_to_target"]["mean"] < 100 and muon["table"]["final val loss"] == "1.801 ± 0.001"
    base = data["experiments"]["baseline"]  # its seeds' mean curve ends at its own mean: reached at the last step
    assert base["steps_to_target"]["mean"] == 100 and base["seconds_to_target"]["mean"] == pytest.approx(1.0)
    assert data["context"]["preset"] == "tiny" and data["target"]["final_val_loss"] == pytest.approx(2.001)
    assert len(data["settings"]) == 6 and {v["key"] for v in data["verdicts"]} >= {"H1", "H4"}
    assert muon["learning_rates"]["interior?"] == "yes" and muon["learning_rates"]["multipliers tried"] == "1x, 2x, 4x"
    assert data["experiments"]["hyperball"]["against_muon_all"] == "lower than muon_all"
    h1 = next(v for v in data["verdicts"] if v["key"] == "H1")
    assert h1["table"]["header"] and h1["table"]["rows"] and all(isinstance(c, str) for c in h1["table"]["rows"][0])


def test_a_folder_mixing_presets_or_step_counts_is_refused(tmp_path):
    make_run(tmp_path, "baseline")
    other = make_run(tmp_path, "muon_all")
    summary = json.loads((other / "summary.json").read_text())
    summary["config"]["max_steps"] = 200
    (other / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="differ in preset, model, max_steps.*max_steps=200"):
        analyze(tmp_path)


def test_the_lr_figure_marks_diverged_settings(tmp_path, monkeypatch):
    from modman.experiments.report import figures

    for scale in (1.0, 2.0, 4.0):
        make_run(tmp_path, "muon_all", lr_scale=scale, val=2.0 - 0.1 * scale, diverged=scale == 4.0)
    runs, _ = load_runs(tmp_path)
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__("fig", fig))
    figures.lr_sweep(group_runs(runs), tmp_path / "lr.png")
    markers = [line for line in drawn["fig"].axes[0].get_lines() if line.get_marker() == "x"]
    assert len(markers) == 1 and list(markers[0].get_xdata()) == [0.04]  # the diverged 4x at its peak lr
    groups = group_runs(runs)
    figures.lr_sweep(groups, tmp_path / "lr.png", best_groups(groups))  # best: 2x, between 1x and the diverged 4x
    ax = drawn["fig"].axes[0]
    assert ax.get_title() == "muon_all" and [
        list(line.get_xdata()) for line in ax.get_lines() if line.get_marker() == "*"
    ] == [[0.02]]
    figures.lr_sweep(groups, tmp_path / "lr.png", {"muon_all": groups[0]})  # a best at the lowest lr tried
    assert drawn["fig"].axes[0].get_title() == "muon_all (best on the edge)"


def test_loss_figures_zoom_on_the_end_of_training(tmp_path, monkeypatch):
    from modman.experiments.report import figures

    make_run(tmp_path, "baseline", val=2.0)
    make_run(tmp_path, "muon_all", val=1.8)
    runs, _ = load_runs(tmp_path)
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__("fig", fig))
    figures.loss_curves(best_groups(group_runs(runs)), tmp_path / "loss.png", "step")
    train_ax, val_ax = drawn["fig"].axes[:2]
    assert train_ax.get_ylim()[1] < 2.9  # the first steps' plunge (from 3.0) is cut
    assert train_ax.get_ylim()[0] < 2.3 < train_ax.get_ylim()[1]  # the final train losses stay in view
    assert val_ax.get_ylim()[0] < 1.8 < 2.0 < val_ax.get_ylim()[1]  # three evaluations: too few to zoom on


def test_condition_numbers_past_float32_precision_are_drawn_at_the_cap(tmp_path, monkeypatch):
    from modman.experiments.report import figures

    run = make_run(tmp_path, "baseline")
    lines = [json.loads(line) for line in (run / "spectra.jsonl").read_text().splitlines()]
    for s in lines:
        if s["role"] == "head":
            s["condition_number"] = 1e40  # a byte head's unused rows: singular in float32
    (run / "spectra.jsonl").write_text("".join(json.dumps(s) + "\n" for s in lines))
    runs, _ = load_runs(tmp_path)
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.__setitem__("fig", fig))
    figures.condition_numbers(best_groups(group_runs(runs)), tmp_path / "cond.png")
    attention, _, _, head, legend = drawn["fig"].axes[:5]
    head_y = [y for line in head.get_lines() for y in line.get_ydata()]
    assert max(head_y) == pytest.approx(figures.COND_CAP) and max(head_y) < 1e7  # capped, not 1e40
    assert [y for line in attention.get_lines() for y in line.get_ydata()] == [10.0] * 3  # below the cap: as logged
    assert legend.get_legend() is not None and attention.get_legend() is None  # the legend off the curves
    assert "singular at float32 precision" in drawn["fig"].texts[0].get_text()
