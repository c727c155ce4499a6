"""modman sweep: the grid, its run names, resuming / skipping, --lr-scale and --name, bad options; then analyze."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modman.cli import main
from modman.experiments.llm.config import TrainConfig
from modman.experiments.llm.sweep import LrSetting, parse_list, parse_lrs, run_sweep, sweep_configs
from modman.experiments.llm.train import train
from modman.optim.modular import DEFAULT_LR

TINY = dict(
    preset="tiny",
    batch_size=8,
    max_steps=10,
    log_every=5,
    eval_every=5,
    eval_batches=2,
    warmup_steps=2,
    checkpoint_every=5,
    progress=False,
)
FLAGS = [
    "--preset",
    "tiny",
    "--batch-size",
    "8",
    "--max-steps",
    "10",
    "--log-every",
    "5",
    "--eval-every",
    "5",
    "--eval-batches",
    "2",
    "--warmup-steps",
    "2",
    "--no-progress",
]


def test_parse_lrs_both_kinds_and_errors():
    assert parse_lrs("0.5x, 1x,2x") == [LrSetting(scale=0.5), LrSetting(scale=1.0), LrSetting(scale=2.0)]
    assert parse_lrs("0.01,0.02") == [LrSetting(lr=0.01), LrSetting(lr=0.02)]
    assert [s.tag for s in parse_lrs("0.5x,2x")] == ["0.5x", "2x"]
    for text, match in (("", "empty"), ("1x,0.01", "mixes"), ("abc", "not a number"), ("-1x", "> 0")):
        with pytest.raises(ValueError, match=match):
            parse_lrs(text)
    assert parse_list("0,1,2", int, "--seeds") == [0, 1, 2]
    for text, match in (("a", "--seeds: 'a' is not"), ("", "empty"), ("1,1", "repeats")):
        with pytest.raises(ValueError, match=match):
            parse_list(text, int, "--seeds")


def test_sweep_configs_name_every_run_and_refuse_what_the_sweep_sets(tmp_path):
    configs = sweep_configs(
        {**TINY, "out": str(tmp_path)}, ["baseline", "muon_all"], parse_lrs("1x,2x"), [0.0, 0.1], [0, 1]
    )
    assert len(configs) == 16 and len({c.run_dir for c in configs}) == 16
    assert configs[0].run_dir == tmp_path / "baseline--lr-1x--wd-0--seed-0"
    assert configs[-1].run_dir.name == "muon_all--lr-2x--wd-0.1--seed-1" and configs[-1].lr_scale == 2.0
    assert sweep_configs({}, ["muon_all"], parse_lrs("0.01"), [0.1], [0])[0].lr == 0.01
    with pytest.raises(ValueError, match="unknown experiment.*nope"):
        sweep_configs({}, ["nope"], parse_lrs("1x"), [0.1], [0])
    with pytest.raises(ValueError, match="sets seed for each run"):
        sweep_configs({"seed": 3}, ["baseline"], parse_lrs("1x"), [0.1], [0])


def test_lr_scale_multiplies_every_lr_and_name_sets_the_folder(tmp_path):
    train(TrainConfig(**TINY, exp="muon_attention", out=str(tmp_path), lr_scale=2.0, name="scaled"))
    train(TrainConfig(**TINY, exp="muon_attention", out=str(tmp_path)))
    scaled, plain = (
        json.loads((tmp_path / n / "metrics.jsonl").read_text().splitlines()[1])["lr"]
        for n in ("scaled", "muon_attention")
    )
    assert set(scaled) == {"embedding", "head", "attention", "ffn", "norm"}
    assert all(scaled[r] == pytest.approx(2 * plain[r]) for r in scaled)
    assert plain["attention"] / plain["ffn"] == pytest.approx(DEFAULT_LR["muon"] / DEFAULT_LR["adamw"])
    for bad, match in (({"lr_scale": 0}, "--lr-scale"), ({"name": "a/b"}, "--name"), ({"name": ".."}, "--name")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


@pytest.mark.slow
def test_sweep_cli_runs_skips_finished_and_analyzes(tmp_path, capsys):
    argv = [
        "sweep",
        "--exp",
        "baseline,stiefel_all",
        "--lrs",
        "1x",
        "--weight-decays",
        "0,0.1",
        "--seeds",
        "0",
        "--out",
        str(tmp_path),
        *FLAGS,
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "[4/4]" in err and "skipped" not in err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "baseline--lr-1x--wd-0--seed-0",
        "baseline--lr-1x--wd-0.1--seed-0",
        "stiefel_all--lr-1x--wd-0--seed-0",
        "stiefel_all--lr-1x--wd-0.1--seed-0",
    ]
    before = (tmp_path / names[0] / "summary.json").stat().st_mtime_ns
    assert main(argv + ["--analyze"]) == 0
    out, err = capsys.readouterr()
    assert err.count("finished before, skipped") == 4
    assert (tmp_path / names[0] / "summary.json").stat().st_mtime_ns == before
    assert "report of 4 runs:" in out and "H5" in out
    report = (tmp_path / "report" / "report.md").read_text()
    assert "weight_decay=" in report  # the best setting of each experiment is named


def test_sweep_does_not_rerun_a_diverged_run_and_refuses_other_settings(tmp_path, monkeypatch):
    (cfg,) = sweep_configs({**TINY, "out": str(tmp_path)}, ["baseline"], parse_lrs("1x"), [0.1], [0])
    cfg.run_dir.mkdir(parents=True)
    summary = {
        "experiment": "baseline",
        "status": "diverged",
        "steps": 3,
        "config": __import__("dataclasses").asdict(cfg),
    }
    (cfg.run_dir / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setattr("modman.experiments.llm.sweep.train", lambda *a, **k: pytest.fail("a diverged run was re-run"))
    lines = []
    assert run_sweep([cfg], log=lines.append)[0]["status"] == "diverged"
    assert "diverged before, skipped" in lines[0]
    monkeypatch.undo()
    (other,) = sweep_configs({**TINY, "out": str(tmp_path), "max_steps": 12}, ["baseline"], parse_lrs("1x"), [0.1], [0])
    train(TrainConfig(**{**TINY, "out": str(tmp_path / "x"), "name": "r"}))
    other.out, other.name = str(tmp_path / "x"), "r"
    with pytest.raises(ValueError, match="max_steps=10 \\(now 12\\)"):
        run_sweep([other], log=lines.append)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--exp", "nope"], "unknown experiment"),
        (["--lrs", "1x,0.1"], "mixes"),
        (["--seeds", "a"], "--seeds"),
        (["--weight-decays", "x"], "--weight-decays"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_sweep_bad_options_are_one_line_errors(tmp_path, capsys, argv, match):
    assert main(["sweep", "--out", str(tmp_path), *FLAGS, *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not any(Path(tmp_path).iterdir())


def test_train_name_with_all_is_refused(tmp_path, capsys):
    assert main(["train", "--all", "--name", "x", "--out", str(tmp_path)]) == 2
    assert "--name" in capsys.readouterr().err
