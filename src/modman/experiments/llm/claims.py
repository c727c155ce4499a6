"""Run folders claimed by one process, so several ``modman tune`` processes can share one tune folder.

A claim is an exclusive ``flock`` on ``RUN/claim.lock``: whoever gets it trains the run, the others pick
another. The operating system drops the lock when its process ends, however it ends, so a claim never goes
stale. Where ``fcntl`` is missing (Windows) every claim succeeds: run one tune process per folder there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK", "claimed", "held_elsewhere"]

LOCK = "claim.lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path`` (created if need be), or None when another holds it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextmanager
def claimed(run_dir: Path) -> Iterator[bool]:
    """``with claimed(d) as mine:`` — ``mine`` says whether this process took ``d`` (no other process holds it);
    the claim lasts until the block ends or the process does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = _try_lock(run_dir / LOCK)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock


def held_elsewhere(root: Path) -> list[Path]:
    """Run folders under ``root`` whose claim another open claim holds (another process's, or one this process
    holds in an enclosing ``claimed`` block)."""
    busy = []
    for lock in sorted(root.rglob(LOCK)):
        fd = _try_lock(lock)
        if fd is None:
            busy.append(lock.parent)
        else:
            os.close(fd)
    return busy
