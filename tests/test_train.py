"""`modman train` on the tiny preset: every experiment learns, files carry their keys, resume is exact."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modman.experiments.common.checkpoint import load_checkpoint
from modman.experiments.llm.build import lr_factor
from modman.experiments.llm.config import TrainConfig
from modman.experiments.llm.recipes import EXPERIMENTS
from modman.experiments.llm.train import TrainingDiverged, batch_at, train
from modman.optim.modular import DEFAULT_LR

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


def cfg(tmp_path, **kw):
    return TrainConfig(**{**TINY, "out": str(tmp_path), **kw})


def cli_command(settings: dict, out) -> tuple[list[str], dict]:
    """``python -m modman train`` with ``settings`` as flags (no progress bar), and the environment to run it in."""
    args = [sys.executable, "-m", "modman", "train", "--out", str(out), "--no-progress"]
    for k, v in settings.items():
        if k != "progress":
            args += [f"--{k.replace('_', '-')}", str(v)]
    return args, dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("exp", list(EXPERIMENTS))
def test_every_experiment_trains_and_the_loss_drops(tmp_path, exp):
    summary = train(cfg(tmp_path, exp=exp))
    metrics = records(tmp_path / exp / "metrics.jsonl")
    assert summary["status"] == "finished" and summary["steps"] == 20
    assert metrics[0]["step"] == 0 and metrics[-1]["step"] == 20
    first_val, last_val = metrics[0]["val_loss"], metrics[-1]["val_loss"]
    train_losses = [m["train_loss"] for m in metrics if "train_loss" in m]
    assert last_val < first_val - 0.5, (first_val, last_val)
    assert train_losses[-1] < train_losses[0] - 0.3, train_losses


def test_output_files_hold_the_documented_keys(tmp_path):
    summary = train(cfg(tmp_path, exp="manifold_muon"))
    run = tmp_path / "manifold_muon"
    metrics = records(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 5, 10, 15, 20]
    for m in metrics[1:]:
        assert {"step", "train_loss", "lr", "tokens_per_sec", "grad_norm", "train_seconds"} <= set(m)
        assert set(m["grad_norm"]) == {"embedding", "head", "attention", "ffn", "norm"}
        assert set(m["lr"]) == set(m["grad_norm"]) and m["tokens_per_sec"] > 0
    for m in (metrics[0], metrics[2], metrics[4]):  # eval steps
        assert m["val_ppl"] == pytest.approx(torch.tensor(m["val_loss"]).exp().item(), rel=1e-6)
    peak = metrics[1]["lr"]["attention"]  # warmup ends at step 5, then the cosine decays
    assert peak == pytest.approx(DEFAULT_LR["manifold_muon"]) and metrics[4]["lr"]["attention"] < peak
    spectra = records(run / "spectra.jsonl")
    assert {s["step"] for s in spectra} == {0, 10, 20}
    matrices = [n for n, p in _model_params(summary) if p.ndim >= 2]
    assert len(spectra) == 3 * len(matrices)
    for s in spectra:
        assert {
            "name",
            "role",
            "rule",
            "shape",
            "sv_min",
            "sv_median",
            "sv_max",
            "fro_norm",
            "condition_number",
        } <= set(s)
        if s["rule"] == "manifold_muon":
            assert s["sv_min"] == pytest.approx(1, abs=1e-4) and s["sv_max"] == pytest.approx(1, abs=1e-4)
    keys = {
        "experiment",
        "steps",
        "final_train_loss",
        "final_val_loss",
        "final_val_ppl",
        "tokens_per_sec",
        "wall_seconds",
        "config",
        "versions",
    }
    on_disk = json.loads((run / "summary.json").read_text())
    assert keys <= set(on_disk) and on_disk["config"]["exp"] == "manifold_muon"
    assert on_disk["final_val_loss"] == metrics[-1]["val_loss"]
    assert {"torch", "modman", "python", "device"} <= set(on_disk["versions"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [5, 10, 15, 20]
    assert [e.step for e in events.Scalars("val/loss")] == [0, 10, 20]
    assert not list(run.glob(".*.tmp"))


def _model_params(summary):
    from modman.experiments.llm.model import PRESETS, Transformer

    return Transformer(PRESETS[summary["config"]["preset"]]).named_parameters()


def _final_state(run_dir):
    return load_checkpoint(run_dir)


def _without_timings(rows):
    return [{k: v for k, v in r.items() if k not in ("tokens_per_sec", "train_seconds")} for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("exp", ["muon_all", "manifold_muon", "stiefel_attention", "modular"])
def test_interrupt_and_resume_equals_the_uninterrupted_run(tmp_path, exp):
    train(cfg(tmp_path / "straight", exp=exp))
    stopped = train(cfg(tmp_path / "broken", exp=exp), stop_after=13)  # checkpoint at 10; steps 11-13 are lost
    assert stopped["status"] == "stopped"
    assert _final_state(tmp_path / "broken" / exp)["step"] == 10
    train(cfg(tmp_path / "broken", exp=exp), resume=True)
    a, b = _final_state(tmp_path / "straight" / exp), _final_state(tmp_path / "broken" / exp)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for name in ("metrics.jsonl", "spectra.jsonl"):
        assert _without_timings(records(tmp_path / "straight" / exp / name)) == _without_timings(
            records(tmp_path / "broken" / exp / name)
        )
    # resuming a finished run changes nothing
    assert train(cfg(tmp_path / "broken", exp=exp), resume=True)["steps"] == 20


def test_modular_experiment_trains_the_modman_gpt_on_its_manifolds(tmp_path):
    """``--exp modular``: modman.modular's GPT with ModularDescent; per-atom lrs are the budgets (lr/c_i)."""
    summary = train(cfg(tmp_path, exp="modular", max_steps=40, eval_every=20))
    metrics = records(tmp_path / "modular" / "metrics.jsonl")
    assert summary["status"] == "finished"
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"] - 0.5, (metrics[0]["val_loss"], metrics[-1]["val_loss"])
    assert set(metrics[1]["lr"]) == {"embedding", "attention", "ffn", "head"}
    spectra = [s for s in records(tmp_path / "modular" / "spectra.jsonl") if s["step"] == 40]
    for s in spectra:
        if s["role"] != "embedding":  # Linear atoms: every singular value sqrt(out/in)
            rows, cols = s["shape"]
            assert s["sv_min"] == pytest.approx((rows / cols) ** 0.5, rel=1e-3)
            assert s["sv_max"] == pytest.approx((rows / cols) ** 0.5, rel=1e-3)
    with pytest.raises(ValueError, match="--role-lr does not apply"):
        TrainConfig(exp="modular", role_lr={"ffn": 0.1})


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_same_final_state(tmp_path):
    settings = dict(TINY, exp="muon_all", max_steps=300, checkpoint_every=5, eval_every=100)
    train(TrainConfig(**settings, out=str(tmp_path / "straight")))
    args, env = cli_command(settings, tmp_path / "killed")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "muon_all" / "checkpoint.json"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _final_state(tmp_path / "killed" / "muon_all")["step"]
    assert 0 < killed_at < 300, "the run was not killed mid-way"
    assert subprocess.run(args + ["--resume"], env=env, capture_output=True).returncode == 0
    a, b = _final_state(tmp_path / "straight" / "muon_all"), _final_state(tmp_path / "killed" / "muon_all")
    assert b["step"] == 300
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert _without_timings(records(tmp_path / "straight" / "muon_all" / "metrics.jsonl")) == _without_timings(
        records(tmp_path / "killed" / "muon_all" / "metrics.jsonl")
    )


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import modman.experiments.llm.train as train_module

    real = train_module.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 14:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_module.F, "cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged, match="at step 14.*step 10"):
        train(cfg(tmp_path, exp="baseline"))
    run = tmp_path / "baseline"
    assert _final_state(run)["step"] == 10
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == 13
    assert [m["step"] for m in records(run / "metrics.jsonl")] == [0, 5, 10]


def test_resume_refuses_other_settings_and_a_new_run_refuses_an_old_folder(tmp_path):
    train(cfg(tmp_path, exp="baseline"), stop_after=10)
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        train(cfg(tmp_path, exp="baseline"))
    with pytest.raises(ValueError, match=r"batch_size=8 \(now 4\)"):
        train(cfg(tmp_path, exp="baseline", batch_size=4), resume=True)
    other = tmp_path / "other.txt"
    other.write_text("a different corpus. " * 400)
    with pytest.raises(ValueError, match=r"data=None \(now '.*other.txt'\)"):
        train(cfg(tmp_path, exp="baseline", data=str(other)), resume=True)


def test_batches_are_a_pure_function_of_seed_and_step_and_the_schedule_warms_up_then_decays():
    tokens = torch.arange(1000) % 256
    c = TrainConfig(batch_size=4, seed=3, warmup_steps=10, max_steps=100, min_lr_ratio=0.1)
    x1, y1 = batch_at(tokens, 7, c, 16)
    x2, y2 = batch_at(tokens, 7, c, 16)
    assert torch.equal(x1, x2) and torch.equal(y1[:, :-1], x1[:, 1:])
    assert not torch.equal(x1, batch_at(tokens, 8, c, 16)[0])
    factors = [lr_factor(s, c) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] == pytest.approx(0.1, abs=1e-3)
