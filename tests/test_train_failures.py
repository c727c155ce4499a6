"""`modman train` when things go wrong: divergence, Ctrl-C, damaged or unwritable checkpoints, bad config types.
Every case ends in one line for the user (no traceback), a kept checkpoint, and an exit code that says what
happened (2 bad input or file, 3 diverged, 130 interrupted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_train import cli_command

import modman.experiments.common.checkpoint as checkpoint_module
import modman.experiments.llm.train as train_module
from modman.cli import main
from modman.experiments.common.checkpoint import load_checkpoint, save_checkpoint
from modman.experiments.llm.config import TrainConfig
from modman.experiments.llm.recipes import TRAIN_EXPERIMENTS
from modman.experiments.llm.train import TrainingDiverged, train

TINY = dict(
    preset="tiny",
    batch_size=8,
    max_steps=20,
    log_every=5,
    eval_every=10,
    eval_batches=2,
    warmup_steps=5,
    checkpoint_every=10,
    progress=False,
)
FLAGS = [
    "--preset",
    "tiny",
    "--batch-size",
    "8",
    "--log-every",
    "5",
    "--eval-every",
    "10",
    "--eval-batches",
    "2",
    "--warmup-steps",
    "5",
    "--no-progress",
]


def cfg(tmp_path, **kw):
    return TrainConfig(**{**TINY, "out": str(tmp_path), **kw})


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


def nan_gradients_from(step: int, monkeypatch):
    """From ``step`` on, the loss stays finite but its gradient is NaN: d/dx sqrt(0·x) = 0·∞."""
    real = train_module.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] >= step:
                return loss + torch.sqrt(0 * loss)
        return loss

    monkeypatch.setattr(train_module.F, "cross_entropy", poisoned)
    return calls


# ------------------------------------------------------------------------------------------------ divergence
@pytest.mark.parametrize("exp", ["muon_all", "modular"])
def test_nan_gradients_before_the_loss_are_a_divergence_at_the_named_step(tmp_path, monkeypatch, exp):
    nan_gradients_from(14, monkeypatch)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 14: the gradient of .* non-finite.*step 10"):
        train(cfg(tmp_path, exp=exp))
    run = tmp_path / exp
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == 13
    assert load_checkpoint(run)["step"] == 10  # the last good state is kept


@pytest.mark.slow
def test_train_all_goes_on_after_a_divergence_and_exits_3(tmp_path, monkeypatch, capsys):
    import modman.experiments.llm.runner as runner

    real_loss, real_train = train_module.F.cross_entropy, runner.train
    running = {"exp": None, "steps": 0}

    def poisoned(*args, **kwargs):  # baseline's gradients go NaN at its third step
        loss = real_loss(*args, **kwargs)
        if torch.is_grad_enabled() and running["exp"] == "baseline":
            running["steps"] += 1
            if running["steps"] >= 3:
                return loss + torch.sqrt(0 * loss)
        return loss

    def tracking(config, **kwargs):
        running["exp"] = config.exp
        return real_train(config, **kwargs)

    monkeypatch.setattr(train_module.F, "cross_entropy", poisoned)
    monkeypatch.setattr(runner, "train", tracking)
    code = main(["train", "--all", "--out", str(tmp_path), "--max-steps", "4", "--checkpoint-every", "2"] + FLAGS)
    out, err = capsys.readouterr()
    assert code == 3 and "Traceback" not in err
    assert "baseline: diverged at step 3" in err
    assert "diverged" in out and out.count("finished") == len(TRAIN_EXPERIMENTS) - 1
    assert json.loads((tmp_path / "modular" / "summary.json").read_text())["status"] == "finished"


# ------------------------------------------------------------------------------------------------ Ctrl-C
@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_at_the_step_it_stopped_and_resume_matches_the_straight_run(tmp_path):
    settings = dict(TINY, exp="muon_all", max_steps=300, checkpoint_every=250, eval_every=300, log_every=10)
    train(TrainConfig(**settings, out=str(tmp_path / "straight")))
    args, env = cli_command(settings, tmp_path / "stopped")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "stopped" / "muon_all" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not metrics.is_file():
        time.sleep(0.01)
    time.sleep(0.5)  # some steps into the run
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    saved = load_checkpoint(tmp_path / "stopped" / "muon_all")["step"]
    assert 0 < saved < 250, saved  # saved at the interrupt, not at a periodic checkpoint
    assert f"checkpoint saved at step {saved}" in err.decode() and b"Traceback" not in err
    assert subprocess.run(args + ["--resume"], env=env, capture_output=True).returncode == 0
    a, b = load_checkpoint(tmp_path / "straight" / "muon_all"), load_checkpoint(tmp_path / "stopped" / "muon_all")
    assert b["step"] == 300
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("damage", ["truncate", "garble", "delete"])
def test_a_damaged_checkpoint_on_resume_is_one_line_naming_it(tmp_path, capsys, damage):
    train(cfg(tmp_path, exp="muon_all", max_steps=20), stop_after=10)
    data = tmp_path / "muon_all" / "checkpoint-00000010" / "__0_0.distcp"
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    elif damage == "garble":
        raw = bytearray(data.read_bytes())
        raw[100:4000] = os.urandom(3900)
        data.write_bytes(bytes(raw))
    else:
        data.unlink()
    code = main(
        [
            "train",
            "--exp",
            "muon_all",
            "--out",
            str(tmp_path),
            "--max-steps",
            "20",
            "--checkpoint-every",
            "10",
            "--resume",
        ]
        + FLAGS
    )
    err = one_line_error(capsys)
    assert code == 2 and "checkpoint-00000010 cannot be read" in err and "move it" in err


def test_a_pointer_outside_the_run_folder_is_refused(tmp_path, capsys):
    for name in ("other", "victim"):
        train(cfg(tmp_path / name, exp="muon_all"), stop_after=10)
    pointer = tmp_path / "victim" / "muon_all" / "checkpoint.json"
    pointer.write_text(json.dumps({"step": 10, "dir": "../../other/muon_all/checkpoint-00000010"}))
    code = main(
        [
            "train",
            "--exp",
            "muon_all",
            "--out",
            str(tmp_path / "victim"),
            "--max-steps",
            "20",
            "--checkpoint-every",
            "10",
            "--resume",
        ]
        + FLAGS
    )
    err = one_line_error(capsys)
    assert code == 2 and "not a checkpoint folder of this run" in err


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, capsys):
    from torch.distributed.checkpoint.api import CheckpointException

    run = tmp_path / "muon_all"
    real_save = checkpoint_module.dcp.save
    saves = {"n": 0}

    def full_disk(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            error = OSError(28, "No space left on device")
            raise CheckpointException("save failed", {0: (error, None)})
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.dcp, "save", full_disk)
    code = main(
        ["train", "--exp", "muon_all", "--out", str(tmp_path), "--max-steps", "20", "--checkpoint-every", "10"] + FLAGS
    )
    err = one_line_error(capsys)
    assert code == 2 and "No space left on device" in err and "checkpoint-00000010 is kept" in err
    assert "--resume" in err and load_checkpoint(run)["step"] == 10
    assert not list(run.glob("checkpoint-*.partial"))


def test_resume_removes_temporaries_a_kill_left_behind(tmp_path):
    train(cfg(tmp_path, exp="baseline"), stop_after=10)
    stale = tmp_path / "baseline" / ".summary.json.abc123.tmp"
    stale.write_text("{half")
    train(cfg(tmp_path, exp="baseline"), resume=True)
    assert not stale.exists() and not list((tmp_path / "baseline").glob(".*.tmp"))


def test_a_damaged_summary_of_a_finished_run_is_written_again_and_a_damaged_log_is_named(tmp_path, capsys):
    first = train(cfg(tmp_path, exp="baseline", max_steps=10))
    run = tmp_path / "baseline"
    (run / "summary.json").write_bytes(b"\x00\xff garbage")
    again = train(cfg(tmp_path, exp="baseline", max_steps=10), resume=True)
    assert again["final_val_loss"] == first["final_val_loss"] and json.loads((run / "summary.json").read_text())
    train(cfg(tmp_path / "partial", exp="baseline", max_steps=20), stop_after=10)
    (tmp_path / "partial" / "baseline" / "metrics.jsonl").write_bytes(b"\x80\x81 not text")
    code = main(
        [
            "train",
            "--exp",
            "baseline",
            "--out",
            str(tmp_path / "partial"),
            "--max-steps",
            "20",
            "--checkpoint-every",
            "10",
            "--resume",
        ]
        + FLAGS
    )
    err = one_line_error(capsys)
    assert code == 2 and "metrics.jsonl is not text" in err


def test_save_checkpoint_error_without_an_earlier_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module.dcp, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(OSError, match="no earlier checkpoint exists"):
        save_checkpoint(tmp_path, {"step": 1}, 1)
    assert not list(Path(tmp_path).glob("checkpoint-*"))


# ------------------------------------------------------------------------------------------------ config types
@pytest.mark.parametrize(
    "settings,match",
    [
        ({"batch_size": True}, "'batch_size' is True \\(bool\\); it must be an integer"),
        ({"data": 5}, "'data' is 5 \\(int\\); it must be a string or null"),
        ({"weight_decay": None}, "'weight_decay' is None .*it must be a number"),
        ({"progress": "no"}, "'progress' is 'no' \\(str\\); it must be true or false"),
        ({"role_lr": "attention"}, "'role_lr' is 'attention' .*a table"),
        ({"role_lr": {"attention": "fast"}}, "'role_lr'"),
        ({"max_steps": 10.5}, "'max_steps' is 10.5"),
    ],
)
def test_config_values_of_the_wrong_type_name_key_value_and_type(tmp_path, capsys, settings, match):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(settings))
    assert main(["train", "--config", str(path), "--out", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert "c.json" in err
    import re

    assert re.search(match, err), err
    with pytest.raises(ValueError, match=match):
        TrainConfig(**settings)


def test_config_with_all_and_an_exp_flag_is_refused(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"max_steps": 5}))
    assert main(["train", "--config", str(path), "--all", "--exp", "baseline", "--out", str(tmp_path)]) == 2
    assert "either --exp NAME or --all" in one_line_error(capsys)


def test_analyze_names_a_binary_log_it_skips(tmp_path, capsys):
    train(cfg(tmp_path, exp="baseline", max_steps=10))
    (tmp_path / "baseline" / "spectra.jsonl").write_bytes(b"\x00\xff\xfe binary \x80")
    main(["analyze", str(tmp_path)])
    err = one_line_error(capsys)
    assert "spectra.jsonl" in err and "not text" in err
