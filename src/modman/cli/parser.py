"""The ``modman`` argument parser: one builder per command, typed options (lists, ``k=v`` tables, grids)."""

from __future__ import annotations

import argparse
import dataclasses
import typing

__all__ = ["build_parser", "add_dataclass_arguments", "BENCHMARKS"]


BENCHMARKS = (
    "msign_accuracy",
    "solvers",
    "optimizer_step",
    "real_gradients",
    "lanes_train",
    "train_speed",
    "stiefel_drift",
    "constrained_step",
    "solver_iterations",
)


def _parse_dict(text: str) -> dict[str, float]:
    """``"attention=0.01,ffn=0.02"`` → ``{"attention": 0.01, "ffn": 0.02}``."""
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=NUMBER (e.g. attention=0.01,ffn=0.02)")
    return out


def _list_of(kind):
    """argparse type: ``"1,2,3"`` → ``[kind("1"), ...]`` with an error naming the bad item."""

    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}s") from None

    return parse


def _lr_grids(text: str) -> dict[str, list[float]]:
    """``"adam=1e-3:3e-3,manifold_muon=0.1"`` → ``{"adam": [0.001, 0.003], "manifold_muon": [0.1]}`` (CIFAR rules)."""
    from ..experiments.cifar.cifar import UPDATES

    out = {}
    for item in filter(None, text.split(",")):
        rule, _, grid = item.partition("=")
        if rule not in UPDATES:
            raise argparse.ArgumentTypeError(f"unknown rule {rule!r}; rules are {', '.join(UPDATES)}")
        try:
            out[rule] = [float(x) for x in grid.split(":")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not RULE=LR:LR:... (e.g. adam=1e-3:3e-3)") from None
    return out


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls, *, suppress_defaults: bool = False, exclude: tuple[str, ...] = ()
) -> None:
    """One ``--flag`` per field of the config dataclass ``cls`` (lists comma-separated, dicts ``k=v,...``).

    ``--snake_case`` spellings are accepted too. With ``suppress_defaults`` a flag that is not given is
    absent from the parsed namespace (so a ``--config`` file can supply it).
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        flags = ["--" + f.name.replace("_", "-")] + (["--" + f.name] if "_" in f.name else [])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = (
            ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
            if isinstance(default, list)
            else default
        )
        meaning = f.metadata.get("help") or getattr(cls, "HELP", {}).get(f.name)
        if not meaning:
            raise TypeError(f"{cls.__name__}.{f.name} has no help text: add it to {cls.__name__}.HELP")
        kw: dict[str, typing.Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS if suppress_defaults else default,
            "help": meaning if "default:" in meaning else f"{meaning} (default: {shown})",
        }
        hint = hints[f.name]
        if typing.get_origin(hint) is list:
            parser.add_argument(*flags, metavar="A,B,...", type=_list_of((typing.get_args(hint) or (str,))[0]), **kw)
        elif typing.get_origin(hint) is dict:
            parser.add_argument(*flags, metavar="K=V,...", type=_parse_dict, **kw)
        elif hint is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
        else:
            kind = next((t for t in (int, float, str) if t is hint or t in typing.get_args(hint)), str)
            parser.add_argument(*flags, type=kind, **kw)


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = argparse.ArgumentParser(prog="modman", description="Modular manifolds for PyTorch.")
    parser.add_argument("--version", action="version", version=f"modman {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of every error (by default a mistake in the options, files or state is one line)",
    )
    sub = parser.add_subparsers(dest="command")
    _add_demo(sub)
    _add_train(sub)
    _add_cifar(sub)
    _add_sweep(sub)
    _add_tune(sub)
    _add_analyze(sub)
    _add_compare(sub)
    _add_lr_transfer(sub)
    _add_roles(sub)
    _add_corpus(sub)
    _add_bench(sub)
    return parser


def _add_demo(sub) -> None:
    from ..experiments.llm.demo import DemoConfig

    demo = sub.add_parser(
        "demo",
        help="train a small byte-level model on the embedded corpus with each optimizer",
        description="Train one byte-level MLP on the embedded Shakespeare text (or --data) "
        "with each optimizer from the same start, and print a comparison table.",
    )
    add_dataclass_arguments(demo, DemoConfig)
    demo.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")


def _add_train(sub) -> None:
    from ..experiments.llm.config import TrainConfig
    from ..experiments.llm.recipes import COMPARISON
    from ..experiments.llm.recipes import TRAIN_EXPERIMENTS as EXPERIMENTS

    train = sub.add_parser(
        "train",
        help="train the LLaMA-style decoder: the comparison, one experiment (--exp) or all of them (--all)",
        description="Train the byte-level LLaMA-style decoder on the embedded Shakespeare text "
        "(or --data) with each experiment's per-role optimizers, one run after the other; each writes "
        "OUT/EXP/{metrics.jsonl,spectra.jsonl,summary.json,checkpoint-STEP/,tensorboard/}, and several "
        f"runs end with OUT/report/report.html. Without --exp or --all: {', '.join(COMPARISON)}. "
        f"Experiments: {', '.join(EXPERIMENTS)}.",
    )
    add_dataclass_arguments(train, TrainConfig, suppress_defaults=True)
    train.add_argument(
        "--all",
        action="store_true",
        help=f"run all {len(EXPERIMENTS)} experiments, one after the other (about 20 minutes at the small preset on "
        f"2 CPU cores); without --exp or --all: the comparison {', '.join(COMPARISON)}",
    )
    train.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after several runs, write OUT/report/report.html (figures, hypotheses) as modman analyze OUT --html "
        "does (default: on)",
    )
    train.add_argument(
        "--resume", action="store_true", help="continue OUT/EXP from its last checkpoint (finished runs are skipped)"
    )
    train.add_argument("--config", metavar="FILE", help="a JSON or TOML file of settings; flags override it")


def _add_cifar(sub) -> None:
    from ..experiments.cifar.cifar import CifarConfig

    cifar = sub.add_parser(
        "cifar",
        help="the modular manifolds blog's CIFAR-10 MLP with manifold Muon, hyperspherical descent or AdamW",
        description="Train the bias-free MLP 3072-128-64-10 on CIFAR-10 (DATA_DIR/cifar-10-batches-py) "
        "and write OUT/update-U-lr-LR-wd-WD-seed-S.json with the blog's result fields.",
    )
    add_dataclass_arguments(cifar, CifarConfig)
    cifar.add_argument(
        "--sweep",
        action="store_true",
        help="run every rule over --lrs and --seeds (finished runs "
        "are skipped), then write OUT/sweep.png and OUT/sweep.json",
    )
    cifar.add_argument(
        "--seeds", default=[0, 1, 2], type=_list_of(int), metavar="A,B,...", help="seeds of the sweep (default: 0,1,2)"
    )
    cifar.add_argument(
        "--lrs",
        default={},
        type=_lr_grids,
        metavar="RULE=LR:LR:...,...",
        help="lr grids of the sweep, e.g. adam=1e-3:3e-3,manifold_muon=0.1 (default: a 5-point grid per rule)",
    )


def _add_run_set_arguments(parser: argparse.ArgumentParser, verb: str, per_run: tuple[str, ...]) -> None:
    """What ``modman sweep`` and ``modman tune`` share: --exp, --config, --analyze and the train settings that
    are the same for every run (``per_run``: the ones the command sets itself)."""
    from ..experiments.llm.config import TrainConfig
    from ..experiments.llm.recipes import TRAIN_EXPERIMENTS as EXPERIMENTS

    parser.add_argument(
        "--exp",
        default=",".join(EXPERIMENTS),
        metavar="A,B,...",
        help=f"experiments to {verb}, comma-separated (default: all {len(EXPERIMENTS)})",
    )
    parser.add_argument("--config", metavar="FILE", help="a JSON or TOML file of the other settings; flags override it")
    parser.add_argument(
        "--analyze", action="store_true", help=f"write OUT/report/ (as modman analyze OUT --html) when the {verb} ends"
    )
    add_dataclass_arguments(parser, TrainConfig, suppress_defaults=True, exclude=per_run)


def _add_sweep(sub) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="train experiments x lrs x weight decays x seeds (resumable)",
        description="Run every combination as a modman train run in OUT/EXP--lr-L--wd-W--seed-S/ "
        "(finished runs are skipped, partial ones resumed); then modman analyze OUT "
        "compares each experiment at its best setting.",
    )
    sweep.add_argument(
        "--lrs",
        default="1x",
        help="0.5x,1x,2x: multiples of each experiment's default lrs, or "
        "0.01,0.02: the lr of its attention and FFN matrices (default: 1x)",
    )
    sweep.add_argument(
        "--weight-decays",
        "--weight_decays",
        dest="weight_decays",
        default="0.1",
        help="decoupled weight decays of AdamW's and Muon's matrices (per step, times the lr), comma-separated "
        "(default: 0.1)",
    )
    sweep.add_argument(
        "--seeds", default="0", help="seeds of the initial weights and batch order, comma-separated (default: 0)"
    )
    _add_run_set_arguments(sweep, "sweep", ("exp", "name", "lr", "lr_scale", "weight_decay", "seed"))


def _add_tune(sub) -> None:
    tune = sub.add_parser(
        "tune",
        help="each experiment at its own lr: a factor-2 grid, then every seed at the best lr and its neighbours",
        description="Per experiment, train a factor-2 grid of lr multipliers around its defaults with the first "
        "seed (extended while the best sits on an edge), then every seed at the best multiplier and its two "
        "neighbours, then each best setting once more into OUT/timed/ for its wall-clock seconds (keep the machine "
        "otherwise idle then). Several modman tune processes may share OUT (one per GPU, say): each trains the runs it "
        "claims. The multiplier scales the attention and FFN matrices' lrs (--matrix-lr-scale; modular: "
        "--lr-scale). Runs are OUT/EXP--mlr-Mx--seed-S; finished runs are skipped, partial ones resumed, and a "
        "folder tuned with other settings is refused. modman analyze OUT reports on it.",
    )
    tune.add_argument(
        "--seeds",
        default="0,1,2",
        help="seeds; the first one trains the grid, all of them the best lrs (default: 0,1,2)",
    )
    tune.add_argument(
        "--points", type=int, default=5, help="multipliers in the first grid, 2^k around 1 (default: 5: 0.25x..4x)"
    )
    tune.add_argument(
        "--max-extend",
        type=int,
        default=3,
        help="how many points the grid may grow by on each side while its best point is on that edge (default: 3)",
    )
    tune.add_argument(
        "--max-runs",
        type=int,
        default=None,
        help="stop after this many new runs; the next modman tune with the same flags continues (default: all)",
    )
    tune.add_argument(
        "--no-decay",
        default=None,
        help="experiments that also train every seed at their best lr with weight decay 0, comma-separated, for "
        "H5 ('' for none; default: those of stiefel_all,manifold_muon,baseline that are tuned)",
    )
    tune.add_argument(
        "--no-timing",
        dest="timing",
        action="store_false",
        help="stop before the timed phase (each best setting trained again, one run at a time, into OUT/timed/ for "
        "the report's seconds); a later modman tune without it runs that phase alone",
    )
    _add_run_set_arguments(tune, "tune", ("exp", "name", "lr", "lr_scale", "matrix_lr_scale", "seed"))


def _add_analyze(sub) -> None:
    analyze = sub.add_parser(
        "analyze",
        help="report on a folder of runs: figures and the LLM experiment plan's hypotheses H1-H5",
        description="Read every run under DIR (metrics.jsonl, spectra.jsonl, summary.json) and "
        "write DIR/report/report.md with PNG figures (and report.html with --html).",
    )
    analyze.add_argument("dir", metavar="DIR", help="the --out folder of modman train or modman sweep")
    analyze.add_argument(
        "--html", action="store_true", help="also write DIR/report/report.html, one self-contained page"
    )


def _add_compare(sub) -> None:
    compare = sub.add_parser(
        "compare",
        help="several reports in one table (e.g. a tune per corpus): does the answer hold?",
        description="Read DIR/report/summary.json of each folder (written by modman analyze DIR) and write "
        "OUT/comparison.md and OUT/comparison.json: per experiment its lr, final val loss and seconds to the "
        "baseline's final val loss in every folder, with ranks, and whether its verdict against the baseline holds.",
    )
    compare.add_argument("dirs", metavar="DIR", nargs="+", help="folders analyzed by modman analyze (two or more)")
    compare.add_argument(
        "--labels", default=None, help="one label per folder, comma-separated (default: each folder's corpus)"
    )
    compare.add_argument(
        "--out", default="runs/comparison", help="where to write the comparison (default: %(default)s)"
    )


def _add_lr_transfer(sub) -> None:
    from ..experiments.cifar.lr_transfer import TransferConfig

    transfer = sub.add_parser(
        "lr-transfer",
        help="does the best lr move with width? modular budgets vs AdamW",
        description="Train the MLP in -> w -> 10 (--depth hidden layers) on pooled CIFAR-10 at each width over an "
        "lr grid, as a modman.modular MLP with ModularDescent and as a torch MLP "
        "with AdamW; writes OUT/*.json, OUT/transfer.png, OUT/transfer.json.",
    )
    add_dataclass_arguments(transfer, TransferConfig)


def _add_roles(sub) -> None:
    roles = sub.add_parser("roles", help="print each parameter's role and the rule an experiment gives it")
    roles.add_argument(
        "--preset",
        default="small",
        help="model size, as modman train --preset: tiny, small, medium, large (default: small)",
    )
    roles.add_argument(
        "--exp", default="baseline", help="the experiment whose rule and lr per parameter to show (default: baseline)"
    )
    roles.add_argument(
        "--model",
        default="modman",
        help="modman (the built-in decoder), or a Hugging Face architecture: "
        "hf:gpt2|hf:llama|hf:qwen2|hf:qwen3|hf:mistral (default: modman)",
    )


def _add_corpus(sub) -> None:
    corpus = sub.add_parser(
        "corpus",
        help="write a second training corpus any machine has: the Python standard library's .py files",
        description="Concatenate this Python's standard library .py files (site-packages left out, files that "
        "are not UTF-8 skipped) in sorted path order into OUT, for modman train/tune --data OUT; prints the "
        "Python version, the file count and the sha256.",
    )
    corpus.add_argument("name", choices=("python-stdlib",), help="the corpus to write (python-stdlib)")
    corpus.add_argument("--out", required=True, metavar="FILE", help="the text file to write (replaced atomically)")


def _add_bench(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="run a benchmark from a source checkout (python -m benchmarks.NAME)",
        description="Run benchmarks/NAME.py of a modman source checkout (the current "
        "folder); options after NAME go to the benchmark (--device, --quick, ...).",
    )
    bench.add_argument(
        "name", choices=BENCHMARKS + ("all",), metavar="NAME", help=f"the benchmark: {', '.join(BENCHMARKS)} or all"
    )
    bench.add_argument(
        "options", nargs=argparse.REMAINDER, help="options of the benchmark (python -m benchmarks.NAME --help)"
    )
