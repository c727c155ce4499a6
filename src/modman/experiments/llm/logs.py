"""The metrics of a training run: ``metrics.jsonl``, ``spectra.jsonl``, TensorBoard, ``summary.json``, progress bar."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...optim.distributed import full_tensor
from ..common.environment import run_versions
from ..common.files import JsonlLog, write_json_atomic

__all__ = ["RunLogger", "matrix_spectrum"]


QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


@torch.no_grad()
def matrix_spectrum(W: torch.Tensor) -> dict[str, Any]:
    """Singular-value quantiles (``sv_min``, ``sv_q10`` … ``sv_max``), Frobenius norm and condition number."""
    M = W.detach().reshape(W.shape[0], -1).to(device="cpu", dtype=torch.float64)
    s = torch.linalg.svdvals(M)
    q = torch.quantile(s, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    names = ["sv_min", "sv_q10", "sv_q25", "sv_median", "sv_q75", "sv_q90", "sv_max"]
    out: dict[str, Any] = dict(zip(names, q))
    out["fro_norm"] = float(torch.linalg.vector_norm(M))
    out["condition_number"] = float(s[0] / s[-1]) if float(s[-1]) > 0 else float("inf")
    return out


class RunLogger:
    """Collects a run's records and writes them atomically; resumes by dropping what came after the checkpoint."""

    def __init__(self, run_dir: Path, cfg, optimizer, device: torch.device, *, enabled: bool = True):
        """``enabled=False`` (the other ranks of a DDP run): every method does nothing; only rank 0 writes."""
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.optimizer = optimizer
        self.device = device
        self.metrics = JsonlLog(self.run_dir / "metrics.jsonl")
        self.spectra = JsonlLog(self.run_dir / "spectra.jsonl")
        self.writer: Any = None  # a torch.utils.tensorboard.SummaryWriter once open (only where enabled)
        self.last_checkpoint = 0

    def open(self, start: int) -> None:
        """Start at step ``start``: keep the logs up to it (a resumed run) or start them empty."""
        if not self.enabled:
            return
        for log in (self.metrics, self.spectra):
            if start > 0:
                log.read_existing()
                log.keep_until(start)
            else:
                log.records = []
        self.last_checkpoint = start
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a killed run wrote after its checkpoint.
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start + 1 if start else None)
        if start == 0:
            self.writer.add_text("config", f"```\n{dataclasses.asdict(self.cfg)}\n```", 0)

    def progress(self, start: int):
        from tqdm.auto import tqdm

        return tqdm(
            total=self.cfg.max_steps,
            initial=start,
            desc=self.cfg.exp,
            unit="step",
            file=sys.stderr,
            disable=not (self.cfg.progress and self.enabled),
            dynamic_ncols=True,
            leave=False,
        )

    @torch.no_grad()
    def grad_norms(self, model: nn.Module) -> dict[str, float]:
        """Euclidean norm of the gradient of each role's parameters (one host sync). Under FSDP2 every rank
        calls it (a shard's square sum is all-reduced)."""
        squares: dict[str, list[torch.Tensor]] = {}
        for name, p in model.named_parameters():
            if p.grad is not None:
                square = p.grad.float().square().sum()
                squares.setdefault(self.optimizer.roles[name], []).append(full_tensor(square))
        roles = list(squares)
        values = torch.stack([torch.stack(squares[r]).sum() for r in roles]).sqrt().tolist() if roles else []
        return dict(zip(roles, values))

    def _record(self, step: int) -> dict:
        if self.metrics.records and self.metrics.records[-1].get("step") == step:
            return self.metrics.records[-1]
        self.metrics.append({"step": step})
        return self.metrics.records[-1]

    def log_train(
        self,
        step: int,
        window: dict,
        lrs: dict[str, float] | None,
        grad_norms: dict[str, float] | None,
        train_seconds: float,
    ) -> None:
        """One log line; ``train_seconds`` is the training time so far (no evaluation), for loss-vs-time plots.
        ``lrs`` and ``grad_norms`` are None only on ranks that do not log."""
        if not self.enabled:
            return
        assert lrs is not None and grad_norms is not None
        loss = window["loss_sum"] / max(1, window["count"])
        tps = window["tokens"] / window["seconds"] if window["seconds"] > 0 else float("nan")
        self._record(step).update(
            train_loss=loss, lr=lrs, tokens_per_sec=tps, grad_norm=grad_norms, train_seconds=train_seconds
        )
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("perf/tokens_per_sec", tps, step)
        for role, value in lrs.items():
            self.writer.add_scalar(f"lr/{role}", value, step)
        for role, value in grad_norms.items():
            self.writer.add_scalar(f"grad_norm/{role}", value, step)

    def log_eval(self, step: int, val_loss: float | None, model: nn.Module) -> None:
        """Validation loss and the spectrum of every matrix (FSDP2: every rank calls it; weights are gathered)."""
        matrices = [(name, full_tensor(p.detach())) for name, p in model.named_parameters() if p.ndim >= 2]
        if not self.enabled:
            return
        assert val_loss is not None  # the logging rank evaluates
        ppl = math.exp(val_loss) if val_loss < 700 else float("inf")
        self._record(step).update(val_loss=val_loss, val_ppl=ppl)
        self.writer.add_scalar("val/loss", val_loss, step)
        self.writer.add_scalar("val/ppl", ppl, step)
        for name, p in matrices:
            spec = matrix_spectrum(p)
            self.spectra.append(
                {
                    "step": step,
                    "name": name,
                    "role": self.optimizer.roles[name],
                    "rule": self.optimizer.assignment[name],
                    "shape": list(p.shape),
                    **spec,
                }
            )
            self.writer.add_scalar(f"condition_number/{name}", spec["condition_number"], step)
            self.writer.add_scalar(f"fro_norm/{name}", spec["fro_norm"], step)
        self.flush()

    def flush(self) -> None:
        if not self.enabled:
            return
        self.metrics.flush()
        self.spectra.flush()
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def write_summary(
        self,
        steps: int,
        train_loss: float | None,
        val_loss: float | None,
        train_seconds: float,
        wall_seconds: float,
        status: str,
        extra: dict | None = None,
    ) -> dict[str, Any]:
        """Write ``summary.json`` (atomically) and return it. tokens/s counts training steps only (no eval)."""
        if not self.enabled:
            return {
                "experiment": self.cfg.exp,
                "status": status,
                "steps": steps,
                "final_train_loss": train_loss,
                "rank_without_logs": True,
            }
        model_tokens = steps * self.cfg.batch_size * _seq_len(self.cfg)
        summary = {
            "experiment": self.cfg.exp,
            "status": status,
            "steps": steps,
            "final_train_loss": train_loss,
            "final_val_loss": val_loss,
            "final_val_ppl": math.exp(val_loss) if val_loss is not None and val_loss < 700 else None,
            "tokens_per_sec": model_tokens / train_seconds if train_seconds > 0 else None,
            "train_seconds": train_seconds,
            "wall_seconds": wall_seconds,
            "config": dataclasses.asdict(self.cfg),
            "versions": run_versions(self.device),
            **(extra or {}),
        }
        write_json_atomic(self.run_dir / "summary.json", summary)
        return summary


def _seq_len(cfg) -> int:
    from .model import PRESETS

    return PRESETS[cfg.preset].seq_len
