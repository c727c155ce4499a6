"""A tune's timed runs lend their clock to the report; modman compare puts several reports in one table."""

from __future__ import annotations

import json
import shutil

import pytest
from test_analyze import make_run

from modman.cli import main
from modman.errors import UserError
from modman.experiments.report import analyze
from modman.experiments.report.compare import comparison, write_comparison


def tuned_folder(root, muon_val=1.80, timed=True):
    """baseline and muon_all with three seeds at 0.01 s/step; their timed runs (if any) at 0.02 s/step."""
    for seed in (0, 1, 2):
        make_run(root, "baseline", seed=seed, val=2.0 + 0.001 * seed)
        make_run(root, "muon_all", seed=seed, val=muon_val + 0.001 * seed, lr_scale=2.0)
    if timed:
        make_run(root / "timed", "baseline", val=2.0, seconds_per_step=0.02, tps=500.0)
        make_run(root / "timed", "muon_all", val=muon_val, lr_scale=2.0, seconds_per_step=0.02, tps=400.0)
    return root


def test_timed_runs_set_the_seconds_and_throughput_but_are_not_seeds(tmp_path):
    from modman.experiments.llm import tune
    from modman.experiments.report import analysis

    assert analysis.TIMED == tune.TIMED  # where the tune writes them is where the report looks
    tuned_folder(tmp_path)
    result = analyze(tmp_path)
    assert result["runs"] == 6 and not result["skipped"]
    data = json.loads((tmp_path / "report" / "summary.json").read_text())
    muon, base = data["experiments"]["muon_all"], data["experiments"]["baseline"]
    assert muon["seeds"] == 3 and muon["timed_run"].endswith("timed/muon_all--lr-2.0x--wd-0.1--seed-0")
    steps = muon["steps_to_target"]["mean"]
    assert 0 < steps < 100 and muon["seconds_to_target"]["mean"] == pytest.approx(0.02 * steps, rel=1e-6)
    assert muon["tokens_per_sec"]["mean"] == 400.0 and base["tokens_per_sec"]["mean"] == 500.0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "by each best setting's timed run" in report
    assert (
        "- Equal steps (final val loss): **muon_all** (1.801 ± 0.001), then baseline (2.001 ± 0.001): ahead" in report
    )
    assert [f"- {line}" in report for line in data["headline"]] == [True, True]  # the JSON holds the headline too


def test_without_timed_runs_the_report_says_its_seconds_are_rough(tmp_path):
    tuned_folder(tmp_path, timed=False)
    analyze(tmp_path)
    data = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert data["experiments"]["muon_all"]["timed_run"] is None
    steps = data["experiments"]["muon_all"]["steps_to_target"]["mean"]
    assert data["experiments"]["muon_all"]["seconds_to_target"]["mean"] == pytest.approx(0.01 * steps, rel=1e-6)
    assert "compare these only when the runs ran one at a time" in (tmp_path / "report" / "report.md").read_text()


def test_a_timed_run_of_another_preset_is_refused_and_one_of_no_setting_is_named(tmp_path):
    tuned_folder(tmp_path, timed=False)
    make_run(tmp_path / "timed", "muon_all", lr_scale=8.0)  # its setting has no seeds here
    result = analyze(tmp_path)
    assert any("a timed run of no setting" in line for line in result["skipped"])
    make_run(tmp_path / "timed", "baseline", preset="small")
    with pytest.raises(UserError, match="preset=small"):
        analyze(tmp_path)


def test_compare_ranks_each_folder_and_says_whether_a_verdict_holds(tmp_path, capsys):
    analyze(tuned_folder(tmp_path / "a"))
    analyze(tuned_folder(tmp_path / "b", muon_val=2.3))  # on b muon_all loses to the baseline
    result = comparison([tmp_path / "a", tmp_path / "b"], ["prose", "code"])
    first = {"winner": "muon_all", "runner_up": "baseline", "beyond_spread": True}
    assert result["winners"]["prose"]["equal_steps"] == first
    assert result["winners"]["code"]["equal_steps"]["winner"] == "baseline"
    assert result["winners"]["code"]["equal_time"] == {"winner": "baseline", "runner_up": None, "beyond_spread": True}
    rows = {r["experiment"]: r for r in result["rows"]}
    assert rows["muon_all"]["per_folder"]["prose"]["vs_baseline"] == "lower"
    assert rows["muon_all"]["per_folder"]["code"]["vs_baseline"] == "higher" and not rows["muon_all"]["holds"]
    assert rows["muon_all"]["per_folder"]["code"]["seconds_to_target"]["infinite"]
    assert rows["baseline"]["per_folder"]["code"]["vs_baseline"] == "reference" and not rows["baseline"]["holds"]
    assert rows["muon_all"]["per_folder"]["prose"]["lr_multiplier"] == 2.0
    path = write_comparison([tmp_path / "a", tmp_path / "b"], tmp_path / "out", ["prose", "code"])
    text = path.read_text()
    assert (
        "- Equal steps (lowest final val loss): **muon_all** on prose (ahead of baseline beyond the spread); "
        "**baseline** on code (ahead of muon_all beyond the spread) — not the same everywhere." in text
    )
    assert "| muon_all | 2x | 1.801 ± 0.001 (1) |" in text and "| never (2) |" not in text
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["rows"] == result["rows"]
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "p,c", "--out", str(tmp_path)]) == 0
    assert "| experiment | p: lr |" in capsys.readouterr().out


def test_an_experiment_run_on_one_corpus_only_is_named_not_run_on_the_other(tmp_path):
    tuned_folder(tmp_path / "a", timed=False)
    for seed in (0, 1, 2):
        make_run(tmp_path / "a", "stiefel_all", seed=seed, val=1.9 + 0.001 * seed)
    make_run(tmp_path / "b", "baseline", val=2.0)
    make_run(tmp_path / "b", "muon_all", val=1.99, lr_scale=2.0)  # one seed: a tie within the 0.01 floor
    make_run(tmp_path / "b", "spectral_all", diverged=True)  # NaN: called diverged, never a tie
    analyze(tmp_path / "a")
    analyze(tmp_path / "b")
    result = comparison([tmp_path / "a", tmp_path / "b"], ["prose", "code"])
    rows = {r["experiment"]: r for r in result["rows"]}
    assert rows["stiefel_all"]["not_run"] == ["code"] and not rows["stiefel_all"]["holds"]
    assert rows["stiefel_all"]["per_folder"]["code"]["vs_baseline"] is None
    assert rows["spectral_all"]["per_folder"]["code"]["vs_baseline"] == "diverged"
    tie = {"winner": "muon_all", "runner_up": "baseline", "beyond_spread": False}
    assert result["winners"]["code"]["equal_steps"] == tie
    text = write_comparison([tmp_path / "a", tmp_path / "b"], tmp_path / "out", ["prose", "code"]).read_text()
    assert "| stiefel_all |" in text and "| lower / not run |" in text and "None" not in text
    assert "**muon_all** on code (a tie with baseline under the spread rule)" in text


def test_compare_refuses_unanalyzed_folders_and_bad_labels(tmp_path, capsys):
    analyze(tuned_folder(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    with pytest.raises(UserError, match="run modman analyze .*b first"):
        comparison([tmp_path / "a", tmp_path / "b"])
    shutil.copytree(tmp_path / "a" / "report", tmp_path / "b" / "report")
    with pytest.raises(UserError, match="their corpora would label them"):
        comparison([tmp_path / "a", tmp_path / "b"])  # both from one corpus: same label
    with pytest.raises(UserError, match="one distinct label per folder"):
        comparison([tmp_path / "a", tmp_path / "b"], ["x"])
    with pytest.raises(UserError, match="at least two folders"):
        comparison([tmp_path / "a"])
    (tmp_path / "b" / "report" / "summary.json").write_text("{not json")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "x,y"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
