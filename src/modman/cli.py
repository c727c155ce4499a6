"""The ``modman`` command line: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import typing
from pathlib import Path

__all__ = ["main", "build_parser", "add_dataclass_arguments"]


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--flag`` per field of the config dataclass ``cls`` (lists are comma-separated)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        hint = hints[f.name]
        if typing.get_origin(hint) is list:
            parser.add_argument(flag, dest=f.name, default=default, metavar="A,B,...",
                                type=lambda s: [x for x in s.split(",") if x], help=f"default: {','.join(default)}")
        elif hint is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = next((t for t in (int, float, str) if t is hint or t in typing.get_args(hint)), str)
            parser.add_argument(flag, dest=f.name, type=kind, default=default, help=f"default: {default}")


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    from .experiments.demo import DemoConfig

    parser = argparse.ArgumentParser(prog="modman", description="Modular manifolds for PyTorch.")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="train a small byte-level model on the embedded corpus with each optimizer",
                          description="Train one byte-level MLP on the embedded Shakespeare text (or --data) "
                                      "with each optimizer from the same start, and print a comparison table.")
    add_dataclass_arguments(demo, DemoConfig)
    demo.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    bench = sub.add_parser("bench", help="run a benchmark from a source checkout (python -m benchmarks.NAME)",
                           description="Run benchmarks/NAME.py of a modman source checkout (the current "
                                       "folder); options after NAME go to the benchmark (--device, --quick, ...).")
    bench.add_argument("name", choices=BENCHMARKS + ("all",))
    bench.add_argument("options", nargs=argparse.REMAINDER)
    return parser


BENCHMARKS = ("msign_accuracy", "solvers", "optimizer_step")


def _run_bench(args: argparse.Namespace) -> int:
    import importlib

    if not (Path.cwd() / "benchmarks" / "__init__.py").is_file():
        raise ValueError(f"no benchmarks/ folder in {Path.cwd()}: run 'modman bench' from a modman source "
                         "checkout (git clone, then cd into it)")
    sys.path.insert(0, str(Path.cwd()))
    for name in BENCHMARKS if args.name == "all" else (args.name,):
        print(f"== benchmarks.{name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main(args.options)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    import torch

    from .experiments.demo import DemoConfig, format_table, run_demo

    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    cfg = DemoConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device}: CUDA is not available on this machine; use --device cpu")
    print(f"modman demo: {cfg.steps} steps, batch {cfg.batch_size}, hidden {cfg.hidden}, device {cfg.device}",
          file=sys.stderr)
    results = run_demo(cfg, progress=lambda r: print(f"  {r['optimizer']}: val loss {r['val_loss']:.3f}",
                                                     file=sys.stderr, flush=True))
    print(format_table(results))
    if args.json:
        write_json_atomic(args.json, {"config": dataclasses.asdict(cfg), "results": results})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return {"demo": _run_demo, "bench": _run_bench}[args.command](args)
    except (ValueError, OSError) as e:  # DataError is a ValueError: one line, no traceback
        print(f"modman {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"modman {args.command}: interrupted", file=sys.stderr)
        return 130
