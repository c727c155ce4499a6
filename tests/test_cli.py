"""The command line: the demo end to end on tiny settings, help, and bad input without tracebacks."""

import json
import subprocess
import sys

import pytest

from modman.cli import main

TINY = [
    "demo",
    "--steps",
    "3",
    "--hidden",
    "8",
    "--embed-dim",
    "4",
    "--context",
    "4",
    "--batch-size",
    "8",
    "--eval-batches",
    "2",
]


def test_demo_prints_a_row_per_optimizer_and_writes_json(tmp_path, capsys):
    out = tmp_path / "res" / "demo.json"
    assert main(TINY + ["--json", str(out)]) == 0
    table = capsys.readouterr().out
    from modman.experiments.llm.demo import RECIPES

    for name in RECIPES:
        assert name in table
    data = json.loads(out.read_text())
    assert [r["optimizer"] for r in data["results"]] == list(RECIPES)
    assert data["config"]["steps"] == 3
    for r in data["results"]:
        assert r["val_loss"] > 0 and r["ms_per_step"] >= 0
    mm = next(r for r in data["results"] if r["optimizer"] == "manifold_muon")
    assert mm["stiefel_violation"] < 1e-5 and mm["msign_per_step"] > 0
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_demo_on_a_user_text_file(tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("to be or not to be, that is the question. " * 200, encoding="utf-8")
    assert main(TINY + ["--optimizers", "muon,adamw", "--data", str(text)]) == 0
    assert "muon" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content,match",
    [(None, "does not exist"), (b"", "is empty"), (b"\x00\x01\x02binary", "binary"), (b"\xff\xfe\xfa text", "UTF-8")],
)
def test_bad_data_file_is_one_line_error(tmp_path, capsys, content, match):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    assert main(TINY + ["--data", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 2  # the header line and the one-line error
    assert match in err and str(path) in err and "Traceback" not in err


def test_unknown_optimizer_lists_valid_names(capsys):
    assert main(TINY + ["--optimizers", "sgd"]) == 2
    err = capsys.readouterr().err
    assert "sgd" in err and "manifold_muon" in err and "Traceback" not in err


def test_bad_number_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--steps", "many"])
    assert e.value.code == 2 and "--steps" in capsys.readouterr().err


def test_zero_steps_is_an_error(capsys):
    assert main(TINY[:1] + ["--steps", "0"]) == 2
    assert "steps must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_help_runs():
    proc = subprocess.run([sys.executable, "-m", "modman", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "demo" in proc.stdout


def test_bench_outside_a_checkout_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "solvers"]) == 2
    err = capsys.readouterr().err
    assert "source checkout" in err and "Traceback" not in err


def test_bench_unknown_name_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err


TRAIN = [
    "train",
    "--preset",
    "tiny",
    "--batch-size",
    "4",
    "--eval-batches",
    "1",
    "--log-every",
    "2",
    "--eval-every",
    "3",
    "--warmup-steps",
    "1",
    "--no-progress",
]


@pytest.mark.slow
def test_train_all_prints_a_summary_row_per_experiment_and_resume_skips_finished(tmp_path, capsys):
    from modman.experiments.llm.recipes import EXPERIMENTS

    assert main(TRAIN + ["--all", "--max_steps", "3", "--out", str(tmp_path)]) == 0  # the plan's spelling
    table = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in table and (tmp_path / name / "summary.json").is_file()
    before = (tmp_path / "baseline" / "metrics.jsonl").read_text()
    assert main(TRAIN + ["--all", "--max-steps", "3", "--out", str(tmp_path), "--resume"]) == 0
    assert (tmp_path / "baseline" / "metrics.jsonl").read_text() == before
    assert main(TRAIN + ["--exp", "baseline", "--max-steps", "3", "--out", str(tmp_path)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_train_config_file_sets_values_and_flags_override(tmp_path, capsys):
    conf = tmp_path / "run.json"
    conf.write_text(json.dumps({"exp": "muon_ffn", "max-steps": 2, "preset": "tiny", "batch_size": 4}))
    assert main(TRAIN + ["--config", str(conf), "--max-steps", "3", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "muon_ffn" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["config"]["exp"] == "muon_ffn"
    toml = tmp_path / "run.toml"
    toml.write_text('exp = "baseline"\nmax_steps = 2\nrole_lr = {attention = 0.01}\n')
    assert main(TRAIN + ["--config", str(toml), "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "baseline" / "summary.json").read_text())["config"]["role_lr"] == {
        "attention": 0.01
    }


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--exp", "nope"], "unknown experiment 'nope'; choose one of: baseline, muon_all"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--max-steps", "0"], "--max-steps must be an integer >= 1"),
        (["--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], "--device"),
        (["--config", "/nonexistent.json"], "does not exist"),
    ],
)
def test_train_bad_options_are_one_line_errors(tmp_path, capsys, argv, match):
    assert main(TRAIN + ["--out", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


@pytest.mark.parametrize(
    "content,match",
    [(None, "does not exist"), (b"", "is empty"), (b"\x00\x01bin", "binary"), (b"short text", "too short")],
)
def test_train_bad_data_file_names_the_file(tmp_path, capsys, content, match):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    assert main(TRAIN + ["--max-steps", "2", "--data", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert match in err and "data.txt" in err


@pytest.mark.parametrize(
    "content,match", [("{not json", "not valid JSON"), ('{"stepz": 3}', "unknown setting"), ("[1, 2]", "one object")]
)
def test_train_bad_config_file(tmp_path, capsys, content, match):
    conf = tmp_path / "c.json"
    conf.write_text(content)
    assert main(TRAIN + ["--config", str(conf), "--out", str(tmp_path)]) == 2
    assert match in capsys.readouterr().err


def test_roles_command_prints_the_table(capsys):
    assert main(["roles", "--preset", "tiny", "--exp", "muon_attention"]) == 0
    out = capsys.readouterr().out
    assert "layers.0.attention.q.weight" in out and "muon" in out and "lm_head.weight" in out
    assert main(["roles", "--exp", "nope"]) == 2


def test_a_bug_shows_its_traceback_and_debug_shows_every_one(monkeypatch, capsys):
    import modman.experiments.llm.demo as demo

    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")  # not a UserError: a bug, not the user's mistake

    monkeypatch.setattr(demo, "run_demo", broken)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(TINY)
    with pytest.raises(ValueError, match="unknown optimizer"):  # --debug: the user's mistake with its traceback
        main(["--debug"] + TINY + ["--optimizers", "sgd"])
    assert main(TINY + ["--optimizers", "sgd"]) == 2  # without it: one line


def test_bench_outside_a_source_checkout_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "solvers"]) == 2
    err = capsys.readouterr().err
    assert "benchmarks ship with modman's source" in err and "python -m benchmarks.NAME" in err


@pytest.mark.slow
def test_train_without_exp_runs_the_comparison_and_writes_the_html_report(tmp_path, capsys):
    from modman.experiments.llm.recipes import COMPARISON

    assert main(TRAIN + ["--max-steps", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMPARISON) and "muon_ffn" not in out
    page = tmp_path / "report" / "report.html"
    assert f"report of {len(COMPARISON)} runs: {page}" in out and page.read_text().startswith("<!DOCTYPE html>")
    assert main(TRAIN + ["--exp", "baseline", "--max-steps", "2", "--out", str(tmp_path / "one")]) == 0
    assert not (tmp_path / "one" / "report").exists()  # one run: the report is a command away
    assert "next: modman analyze" in capsys.readouterr().err


def test_version_and_every_option_says_what_it_does(capsys):
    import argparse

    from modman import __version__
    from modman.cli import build_parser

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"modman {__version__}"
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            meaning = (action.help or "").split("(default:")[0].strip()
            assert len(meaning) > 15, f"modman {name} {action.option_strings or action.dest}: help {action.help!r}"


def test_the_experiment_commands_name_the_extra_they_need(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert main(TRAIN + ["--exp", "baseline", "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "needs tensorboard" in err and "pip install 'modman[experiments]'" in err


def test_a_report_the_folder_refuses_does_not_fail_the_training(tmp_path, capsys, monkeypatch):
    import modman.cli.commands as commands
    import modman.experiments.llm.runner as runner
    from modman.errors import UserError

    done = {"experiment": "baseline", "status": "finished", "steps": 2, "final_train_loss": 1.0}
    done |= {"final_val_loss": 1.0, "final_val_ppl": 2.7, "tokens_per_sec": 1.0, "wall_seconds": 1.0}
    monkeypatch.setattr(runner, "run_experiments", lambda *a, **k: ([done, dict(done, experiment="muon_all")], []))

    def refuse(*args, **kwargs):
        raise UserError("the runs in this folder differ in preset ... and cannot share one verdict")

    monkeypatch.setattr(commands, "_report", refuse)
    assert main(TRAIN + ["--max-steps", "2", "--out", str(tmp_path)]) == 0  # the runs are saved: not a failure
    captured = capsys.readouterr()
    assert "muon_all" in captured.out and "no report: the runs in this folder differ" in captured.err
