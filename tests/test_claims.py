"""Several modman tune processes share one folder: a run is trained by the process that claims it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modman.experiments.llm.claims import LOCK, claimed, held_elsewhere

fcntl = pytest.importorskip("fcntl")

HOLD = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def hold(run_dir: Path) -> subprocess.Popen:
    """Another process that holds ``run_dir``'s claim until killed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir / LOCK)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_claim_is_exclusive_and_ends_with_its_block_or_its_process(tmp_path):
    run = tmp_path / "baseline--mlr-1x--seed-0"
    with claimed(run) as mine:
        assert mine and held_elsewhere(tmp_path) == [run]  # a second claim, even from this process, is refused
        with claimed(run) as again:
            assert not again
    with claimed(run) as mine:
        assert mine  # released at the end of the block
    other = hold(run)
    try:
        with claimed(run) as mine:
            assert not mine
    finally:
        other.kill()
        other.wait()
    with claimed(run) as mine:
        assert mine and held_elsewhere(tmp_path) == [run]  # the killed process's claim went with it


@pytest.mark.slow
def test_tune_skips_what_another_process_trains_and_leaves_it_the_timing(tmp_path, monkeypatch):
    from modman.experiments.llm import tune as tune_module
    from modman.experiments.llm.tune import TIMED, TuneSpec, run_name, tune

    spec = TuneSpec(("baseline",), seeds=(0, 1), points=3, max_extend=0)
    settings = {"preset": "tiny", "batch_size": 4, "eval_batches": 1, "warmup_steps": 1, "max_steps": 2}
    settings.update(progress=False, out=str(tmp_path))
    other = hold(tmp_path / run_name("baseline", -1, 0))  # the first grid run is another process's
    try:
        ended = tune(settings, spec, max_runs=1)
        assert list(ended) == [run_name("baseline", 0, 0)]  # this one took the next
    finally:
        other.kill()
        other.wait()
    tune(settings, spec, timing=False)
    other = hold(tmp_path / TIMED)  # another process times the runs: this one leaves it to it
    try:
        lines = []
        ended = tune(settings, spec, log=lines.append)
        assert not any(s["timed"] for s in ended.values()) and "times the runs" in lines[-1]
    finally:
        other.kill()
        other.wait()
    monkeypatch.setattr(tune_module, "POLL_S", 0.01)
    waits = []
    other = hold(tmp_path / run_name("baseline", 0, 1))  # a run still held: the timing waits until it is free

    def log(line):
        waits.append(line)
        if "timing waits" in line:
            other.kill()
            other.wait()

    try:
        ended = tune(settings, spec, log=log)
    finally:
        other.kill()
        other.wait()
    assert any("timing waits for 1 run" in w for w in waits) and sum(s["timed"] for s in ended.values()) == 1
