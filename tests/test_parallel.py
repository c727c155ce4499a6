"""--parallel ddp|fsdp under torchrun (gloo, 2 CPU processes): same weights as one process, shared msign work,
torch.distributed.checkpoint checkpoints resumed on another number of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modman.experiments.common.checkpoint import load_checkpoint
from modman.experiments.llm.config import TrainConfig
from modman.experiments.llm.train import train
from modman.optim.distributed import assign_owners

TINY64 = dict(
    preset="tiny",
    batch_size=8,
    max_steps=6,
    log_every=1,
    eval_every=3,
    eval_batches=2,
    warmup_steps=2,
    checkpoint_every=3,
    dtype="float64",
    device="cpu",
    progress=False,
)  # gloo on the CPU, GPU or not


def torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def flags(settings: dict) -> list[str]:
    out = []
    for k, v in settings.items():
        if k == "progress":
            out.append("--no-progress")
        else:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir)["model"]


def test_owners_balance_the_work_and_agree_everywhere():
    shapes = [(512, 128)] * 4 + [(128, 128)] * 8 + [(64, 64)] * 3
    params = [torch.empty(s) for s in shapes]
    owners = assign_owners(params, 2)
    assert owners == assign_owners(params, 2)  # a pure function of the order and shapes
    load = [sum(p.shape[0] * p.shape[1] * min(p.shape) for p in params if owners[id(p)] == r) for r in (0, 1)]
    assert abs(load[0] - load[1]) <= 64 * 64 * 64
    assert set(assign_owners(params, 1).values()) == {0}


@pytest.mark.slow
@pytest.mark.parametrize(
    "exp, mode",
    [
        ("muon_all", "ddp"),
        ("manifold_muon", "ddp"),
        ("muon_all", "fsdp"),
        ("manifold_muon", "fsdp"),
        ("modular", "ddp"),
        ("spectral_sphere", "ddp"),
        ("hyperball", "fsdp"),
    ],
)
def test_two_processes_match_one_and_share_the_msign_work(tmp_path, exp, mode):
    settings = dict(TINY64, exp=exp, max_steps=5)
    train(TrainConfig(**settings, out=str(tmp_path / "one")))
    res = torchrun(
        ["-m", "modman", "train", "--parallel", mode, "--out", str(tmp_path / "two"), *flags(settings)], tmp_path
    )
    assert res.stdout.count("finished") == 1  # rank 0 prints the table, once
    a, b = weights(tmp_path / "one" / exp), weights(tmp_path / "two" / exp)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    one = [json.loads(line) for line in (tmp_path / "one" / exp / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two" / exp / "metrics.jsonl").read_text().splitlines()]
    losses = [(m["train_loss"], n["train_loss"]) for m, n in zip(one, two) if "train_loss" in m]
    assert len(losses) == 5 and all(x == pytest.approx(y, rel=1e-9) for x, y in losses)
    work = json.loads((tmp_path / "two" / exp / "summary.json").read_text())["work_per_rank"]
    solo = json.loads((tmp_path / "one" / exp / "summary.json").read_text())["work_per_rank"][0]
    assert len(work) == 2 and work[0]["matrices"] + work[1]["matrices"] == solo["matrices"]
    assert all(0.35 <= w["matrices"] / solo["matrices"] <= 0.65 for w in work), work


DRIVER = """
import json, sys
from modman.experiments.llm.config import TrainConfig
from modman.experiments.llm.train import train
cfg = json.loads(sys.argv[1])
resume = cfg.pop("resume", False)
train(TrainConfig(**cfg), resume=resume, stop_after=int(sys.argv[2]) or None)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "exp, saved_on, resumed_on",
    [
        ("manifold_muon", "ddp", "none"),
        ("manifold_muon", "fsdp", "none"),
        ("manifold_muon", "none", "fsdp"),
        ("modular", "none", "ddp"),
        ("hyperball", "ddp", "none"),
        ("spectral_sphere", "none", "ddp"),
    ],
)
def test_checkpoint_resumes_on_another_number_of_processes(tmp_path, exp, saved_on, resumed_on):
    settings = dict(TINY64, exp=exp)
    train(TrainConfig(**settings, out=str(tmp_path / "straight")))
    (tmp_path / "driver.py").write_text(DRIVER)

    def run(mode: str, stop_after: int) -> None:
        cfg = dict(settings, out=str(tmp_path / "broken"), parallel=mode, resume=stop_after == 0)
        if mode == "none":
            train(
                TrainConfig(**{k: v for k, v in cfg.items() if k != "resume"}),
                resume=cfg["resume"],
                stop_after=stop_after or None,
            )
        else:
            torchrun([str(tmp_path / "driver.py"), json.dumps(cfg), str(stop_after)], tmp_path)

    run(saved_on, 4)  # checkpoint at 3; step 4 is lost
    saved = load_checkpoint(tmp_path / "broken" / exp)
    assert saved["step"] == 3 and saved["config"]["parallel"] == saved_on
    run(resumed_on, 0)
    assert load_checkpoint(tmp_path / "broken" / exp)["step"] == 6
    a, b = weights(tmp_path / "straight" / exp), weights(tmp_path / "broken" / exp)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_ddp_outside_torchrun_and_uneven_batches_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="runs under torchrun"):
        train(TrainConfig(**dict(TINY64, exp="muon_all", parallel="ddp"), out=str(tmp_path)))
    with pytest.raises(ValueError, match="runs under torchrun"):
        train(TrainConfig(**dict(TINY64, exp="muon_all", parallel="fsdp"), out=str(tmp_path)))
    with pytest.raises(ValueError, match="--parallel must be none, ddp or fsdp"):
        TrainConfig(parallel="fsdp2")
    with pytest.raises(ValueError, match="--exp modular runs with --parallel none or ddp"):
        TrainConfig(exp="modular", parallel="fsdp")
    with pytest.raises(ValueError, match="--dtype"):
        TrainConfig(dtype="float16")
