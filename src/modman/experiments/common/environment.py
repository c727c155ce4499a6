"""The machine a run uses: the device a ``--device`` spec names, and the versions that make a run reproducible."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from ...errors import UserError

__all__ = ["resolve_device", "run_versions", "cpu_name"]


def resolve_device(spec: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; an unusable device is a ValueError naming ``--device``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"--device: {spec!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
    return device


def _git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def run_versions(device: torch.device) -> dict[str, Any]:
    """Versions and machine facts that make a run reproducible (modded-nanogpt style)."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy

    try:
        modman_version = version("modman")
    except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        modman_version = None
    info: dict[str, Any] = {
        "modman": modman_version,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_sha": _git_sha(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info
