"""The command line: the demo end to end on tiny settings, help, and bad input without tracebacks."""

import json
import subprocess
import sys

import pytest

from modman.cli import main

TINY = ["demo", "--steps", "3", "--hidden", "8", "--embed-dim", "4", "--context", "4", "--batch-size", "8",
        "--eval-batches", "2"]


def test_demo_prints_a_row_per_optimizer_and_writes_json(tmp_path, capsys):
    out = tmp_path / "res" / "demo.json"
    assert main(TINY + ["--json", str(out)]) == 0
    table = capsys.readouterr().out
    from modman.experiments.demo import RECIPES

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
