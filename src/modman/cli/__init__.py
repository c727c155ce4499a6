"""The ``modman`` command line: argument parsing (``parser``) and dispatch to the commands (``commands``)."""

from __future__ import annotations

import sys

from ..errors import UserError
from .commands import (
    _run_analyze,
    _run_bench,
    _run_cifar,
    _run_compare,
    _run_corpus,
    _run_demo,
    _run_lr_transfer,
    _run_roles,
    _run_sweep,
    _run_train,
    _run_tune,
)
from .parser import add_dataclass_arguments, build_parser

__all__ = ["main", "build_parser", "add_dataclass_arguments"]

# Commands that log, plot or report: they need the ``experiments`` extra (tqdm, tensorboard, matplotlib).
NEEDS_EXTRAS = ("demo", "train", "cifar", "sweep", "tune", "analyze", "compare", "lr-transfer")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    run = {
        "demo": _run_demo,
        "bench": _run_bench,
        "train": _run_train,
        "roles": _run_roles,
        "corpus": _run_corpus,
        "cifar": _run_cifar,
        "sweep": _run_sweep,
        "tune": _run_tune,
        "analyze": _run_analyze,
        "compare": _run_compare,
        "lr-transfer": _run_lr_transfer,
    }[args.command]
    try:
        if args.command in NEEDS_EXTRAS:
            from ..experiments import require_extras

            require_extras(f"modman {args.command}")
        return run(args)
    except (UserError, OSError) as e:  # a mistake the user can fix: one line (a bug shows its traceback)
        if args.debug:
            raise
        print(f"modman {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"modman {args.command}: {e or 'interrupted'}", file=sys.stderr)
        return 130
