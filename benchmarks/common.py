"""Shared helpers: argument parsing, careful timing, tables, JSON results with machine facts."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from modman.experiments.common.files import write_json_atomic
from modman.msign import fast_bfloat16


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON result (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="small shapes only (a smoke run in seconds)")
    p.add_argument("--seed", type=int, default=0)
    return p


def lane_counts(p: argparse.ArgumentParser, text: str) -> list[int]:
    """``--workers 1,2,4``: the numbers of concurrent lanes, each an int >= 1 (else a parser error)."""
    try:
        lanes = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        lanes = [0]
    if any(w < 1 for w in lanes):
        p.error(f"--workers {text!r}: give comma-separated ints >= 1, e.g. 1,2,4")
    return lanes


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn, device: str, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds, synchronising the device around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> dict:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        sha = ""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git": sha,
        "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_fast_bfloat16": fast_bfloat16("cpu"),
    }


def format_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if (abs(v) < 1e-2 or abs(v) >= 1e4) and v != 0 else f"{v:.3f}"
        return str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]

    def line(vals):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"

    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(b) for b in body])


def finish(name: str, args, rows: list[dict], columns: list[str], extra: dict | None = None) -> None:
    print(format_table(rows, columns))
    out = Path(args.out) / f"{name}.json"
    write_json_atomic(out, {"benchmark": name, "args": vars(args), "machine": machine(), "rows": rows, **(extra or {})})
    print(f"\nwrote {out}")


def to_jsonable(v):
    return json.loads(json.dumps(v, default=float))
