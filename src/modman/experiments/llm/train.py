"""``modman train``: train the LLaMA-style decoder on byte tokens with one of the LLM experiment plan's experiments.

A run lives in ``OUT/<exp>/``: ``metrics.jsonl``, ``spectra.jsonl``, TensorBoard event files,
``checkpoint-STEP/`` (torch.distributed.checkpoint, named by ``checkpoint.json``) and, when it ends,
``summary.json``. Batches are a pure function of (seed, step), so a run resumed from a checkpoint — also
after SIGKILL — takes exactly the steps of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import UserError
from ...optim import ModularOptimizer
from ...optim.guard import NonFiniteError
from ..common.checkpoint import load_checkpoint, remove_stale_temporaries, rng_state, save_checkpoint, set_rng_state
from ..common.data import DataError, load_text_bytes, sha256, split_tokens
from ..common.parallel import Parallel, init_parallel
from .build import build_run
from .config import RESUME_FREE, TrainConfig
from .logs import RunLogger
from .model import PRESETS

__all__ = ["TrainConfig", "TrainingDiverged", "TrainingInterrupted", "train", "batch_at", "eval_batches"]


class TrainingDiverged(UserError):
    """The loss, a gradient or an update became NaN/Inf; the message gives the step and the checkpoint kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT): the run stopped after a whole step and saved a checkpoint there; ``--resume`` continues."""


def _diverged(cfg: TrainConfig, step: int, what: str, kept: int) -> TrainingDiverged:
    return TrainingDiverged(
        f"{cfg.exp}: diverged at step {step}: {what}. The run stopped there; the checkpoint in "
        f"{cfg.run_dir} keeps the last good state (step {kept}). Lower the learning rate (--lr) "
        "and start a new run (another --out)."
    )


class _InterruptFlag:
    """While active (main thread only): the first SIGINT asks the loop to stop after the current step; a second
    one interrupts at once (the optimizer's step is atomic, so the weights stay whole)."""

    def __init__(self):
        self.requested, self._previous = False, None

    def install(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def agreed(self, par: Parallel) -> bool:
        """Whether any rank was interrupted (every rank stops at the same step)."""
        if par.world == 1:
            return self.requested
        return bool(par.mean(torch.tensor([float(self.requested)], device=par.device)).item() > 0)


def batch_at(tokens: torch.Tensor, step: int, cfg: TrainConfig, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step``: ``batch_size`` random windows drawn from a generator seeded by (seed, step)."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    starts = torch.randint(0, len(tokens) - seq_len - 1, (cfg.batch_size,), generator=gen)
    seq = tokens[starts[:, None] + torch.arange(seq_len + 1)]  # (B, T+1)
    return seq[:, :-1], seq[:, 1:]


def eval_batches(tokens: torch.Tensor, cfg: TrainConfig, seq_len: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``eval_batches`` fixed batches of windows spread evenly over the validation text."""
    n = cfg.eval_batches * cfg.batch_size
    starts = torch.linspace(0, len(tokens) - seq_len - 1, n).long()
    seq = tokens[starts[:, None] + torch.arange(seq_len + 1)]
    return [(s[:, :-1], s[:, 1:]) for s in seq.split(cfg.batch_size)]


def _load_tokens(cfg: TrainConfig, seq_len: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    raw = load_text_bytes(cfg.data)
    train_tokens, val_tokens = split_tokens(raw)
    if len(val_tokens) < seq_len + 2:
        where = repr(cfg.data) if cfg.data else "the embedded corpus"
        raise DataError(
            f"data file {where} is too short: its validation part (the last 10%) has {len(val_tokens)} "
            f"bytes and preset {cfg.preset!r} needs windows of {seq_len + 1}; give a text of at least "
            f"{10 * (seq_len + 2)} bytes"
        )
    return train_tokens, val_tokens, sha256(raw)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, device: torch.device) -> float:
    model.eval()
    total = sum(F.cross_entropy(model(x.to(device)).flatten(0, 1), y.to(device).flatten()).item() for x, y in batches)
    model.train()
    return total / len(batches)


def _check_resume(saved: dict[str, Any], cfg: TrainConfig, data_sha: str, run_dir: Path) -> None:
    now = dataclasses.asdict(cfg)
    differ = [k for k, v in saved["config"].items() if k not in RESUME_FREE and now.get(k) != v]
    if differ:
        detail = ", ".join(f"{k}={saved['config'][k]!r} (now {now.get(k)!r})" for k in differ)
        raise UserError(
            f"--resume: the run in {run_dir} was started with {detail}; resume with the same settings "
            "or start a new run with another --out"
        )
    if saved["data_sha256"] != data_sha:
        raise UserError(
            f"--resume: the data differs from the run in {run_dir} (sha256 {saved['data_sha256'][:12]}… "
            f"vs {data_sha[:12]}…); resume with the same --data"
        )


def _new_window() -> dict[str, float]:
    """The losses and timings since the last log line."""
    return {"loss_sum": 0.0, "count": 0, "tokens": 0, "seconds": 0.0}


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Run (or continue) one experiment; returns its summary. ``stop_after`` ends early (tests, interrupts).

    With ``parallel="ddp"`` or ``"fsdp"`` (under torchrun) every rank runs this; rank 0 writes the logs, every
    rank its part of each checkpoint.
    """
    seq_len = PRESETS[cfg.preset].seq_len
    train_tokens, val_tokens, data_sha = _load_tokens(cfg, seq_len)
    run_dir = cfg.run_dir
    saved = load_checkpoint(run_dir, keys={"step", "config", "data_sha256"})
    if saved is not None and not resume:
        raise UserError(
            f"{run_dir} already holds a run (checkpoint at step {saved['step']}); pass --resume to "
            "continue it, or choose another --out"
        )
    if saved is not None:
        _check_resume(saved, cfg, data_sha, run_dir)
        summary_path = run_dir / "summary.json"
        if saved["step"] >= cfg.max_steps and summary_path.is_file():
            try:
                return json.loads(summary_path.read_text())  # finished: nothing to do
            except (ValueError, UnicodeDecodeError):
                pass  # a damaged summary: the run below takes no step and writes it again
    par = init_parallel(cfg.parallel, cfg.resolved_device(), cfg.batch_size)
    try:
        return _run(cfg, par, saved is not None, (train_tokens, val_tokens, data_sha, seq_len), stop_after, on_step)
    finally:
        par.close()


def _run(cfg: TrainConfig, par: Parallel, resume: bool, data, stop_after, on_step) -> dict[str, Any]:
    run = _Run(cfg, par, data)
    if resume:
        run.restore()
    return run.loop(stop_after, on_step)


class _Run:
    """One process's part of a run: the model, optimizer, schedule and logs, and what a checkpoint keeps."""

    def __init__(self, cfg: TrainConfig, par: Parallel, data) -> None:
        self.cfg, self.par = cfg, par
        self.train_tokens, val_tokens, self.data_sha, self.seq_len = data
        self.device, self.run_dir = par.device, cfg.run_dir
        self.model, self.opt, self.sched = build_run(cfg, self.device, par.shard)
        if par.world > 1:
            self.opt.share_work()  # each matrix's update computed by one owner rank
        self.logger = RunLogger(self.run_dir, cfg, self.opt, self.device, enabled=par.main)
        self.start, self.window = 0, _new_window()
        self.progress: dict[str, Any] = {"train_seconds": 0.0, "wall": 0.0, "last_train": None, "last_val": None}
        self.evals = eval_batches(val_tokens, cfg, self.seq_len)
        self.began = time.perf_counter()

    def restore(self) -> None:
        """Continue from the last checkpoint: each process reads its shards and the state of the matrices it owns."""
        if self.par.main:
            remove_stale_temporaries(self.run_dir)  # left by a kill during an atomic write
        saved = load_checkpoint(self.run_dir, model=self.model, optimizer=self.opt)
        assert saved is not None  # train() resumes only a run with a checkpoint
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        self.start, self.window, self.progress = saved["step"], saved["window"], saved["progress"]

    def elapsed(self) -> float:
        return self.progress["wall"] + time.perf_counter() - self.began

    def checkpoint(self, step: int) -> None:
        self.logger.flush()  # the logs reach the checkpoint's step before the checkpoint names it (rank 0 writes them)
        state = {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": rng_state(),
            "data_position": step,
            "window": dict(self.window),
            "progress": dict(self.progress, wall=self.elapsed()),
            "config": dataclasses.asdict(self.cfg),
            "data_sha256": self.data_sha,
        }
        save_checkpoint(self.run_dir, state, step)
        self.logger.last_checkpoint = step

    def summary(self, steps: int, status: str, extra: dict | None = None) -> dict[str, Any]:
        p = self.progress
        return self.logger.write_summary(
            steps, p["last_train"], p["last_val"], p["train_seconds"], self.elapsed(), status=status, extra=extra
        )

    def loop(self, stop_after: int | None, on_step) -> dict[str, Any]:
        cfg, logger = self.cfg, self.logger
        stepper = self.par.wrap(self.model)
        logger.open(self.start)
        if self.start == 0:
            self.progress["last_val"] = evaluate(self.model, self.evals, self.device)
            logger.log_eval(0, self.progress["last_val"], self.model)
        self.began = time.perf_counter()
        bar = logger.progress(self.start)
        step = self.start
        interrupt = _InterruptFlag().install()
        try:
            for step in range(self.start, cfg.max_steps):
                if interrupt.agreed(self.par):
                    if logger.last_checkpoint != step:
                        self.checkpoint(step)
                    raise TrainingInterrupted(
                        f"{cfg.exp}: interrupted; checkpoint saved at step {step} in {self.run_dir}: "
                        "--resume continues from there"
                    )
                loss_value = self.step(stepper, step)
                done = step + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{self.progress['last_val'] or float('nan'):.3f}")
                if on_step is not None:
                    on_step(done, loss_value)
                if stop_after is not None and stop_after <= done < cfg.max_steps:
                    logger.flush()
                    return {"experiment": cfg.exp, "steps": done, "status": "stopped"}
        except TrainingDiverged:
            logger.flush()
            self.summary(step, "diverged")
            raise
        finally:
            interrupt.restore()
            bar.close()
            logger.close()
        work = self.par.gather(self.opt.local_work)
        return self.summary(cfg.max_steps, "finished", {"processes": self.par.world, "work_per_rank": work})

    def step(self, stepper: torch.nn.Module, step: int) -> float:
        """Train on ``step``'s batch, then log, evaluate and checkpoint as the settings say; the global loss."""
        cfg, par, opt, logger, device = self.cfg, self.par, self.opt, self.logger, self.device
        t0 = time.perf_counter()
        x, y = batch_at(self.train_tokens, step, cfg, self.seq_len)
        x, y = par.slice(x), par.slice(y)
        loss = F.cross_entropy(stepper(x.to(device)).flatten(0, 1), y.to(device).flatten())
        loss_value = par.mean(loss.detach()).item()  # the global batch's loss, on every rank
        if not math.isfinite(loss_value):
            raise _diverged(cfg, step + 1, f"the training loss is {loss_value}", logger.last_checkpoint)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        done = step + 1
        logging = done % cfg.log_every == 0 or done == cfg.max_steps
        # FSDP2: reading sharded gradients and weights is collective, so every rank takes part.
        reads = logging and (par.main or par.sharded)
        grad_norms, lrs = (logger.grad_norms(self.model), _lrs_by_role(opt)) if reads else (None, None)
        try:
            opt.step()
        except NonFiniteError as e:  # gradients go NaN/Inf before the loss does
            names = ", ".join(e.names[:3]) + (f" and {len(e.names) - 3} more" if len(e.names) > 3 else "")
            what = f"the {e.kind} of {names} is non-finite (NaN or Inf)"
            raise _diverged(cfg, done, what, logger.last_checkpoint) from None
        self.sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        self.progress["train_seconds"] += seconds
        w = self.window
        w["loss_sum"], w["count"], w["tokens"] = (
            w["loss_sum"] + loss_value,
            w["count"] + 1,
            w["tokens"] + x.numel() * par.world,
        )
        w["seconds"] += seconds
        if logging:
            self.progress["last_train"] = w["loss_sum"] / w["count"]
            logger.log_train(done, w, lrs, grad_norms, self.progress["train_seconds"])
            self.window = _new_window()
        if done % cfg.eval_every == 0 or done == cfg.max_steps:
            if par.main or par.sharded:
                self.progress["last_val"] = evaluate(self.model, self.evals, device)
            logger.log_eval(done, self.progress["last_val"], self.model)
        if done % cfg.checkpoint_every == 0 or done == cfg.max_steps:
            self.checkpoint(done)
        return loss_value


def _lrs_by_role(opt: ModularOptimizer) -> dict[str, float]:
    """Current lr of each role (of its matrices when the role has both matrices and vectors)."""
    lrs: dict[str, float] = {}
    for g in opt.param_groups:
        if g["role"] not in lrs or g["params"][0].ndim >= 2:
            lrs[g["role"]] = g["lr"]
    return lrs
