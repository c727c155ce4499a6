"""The ``modman`` command line: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path

from .errors import UserError

__all__ = ["main", "build_parser", "add_dataclass_arguments"]


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
    from .experiments.cifar.cifar import UPDATES

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
        kw: dict[str, typing.Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS if suppress_defaults else default,
            "help": (f.metadata["help"] + "; " if "help" in f.metadata else "") + f"default: {shown}",
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
    from .experiments.llm.demo import DemoConfig

    parser = argparse.ArgumentParser(prog="modman", description="Modular manifolds for PyTorch.")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of every error (by default a mistake in the options, files or state is one line)",
    )
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser(
        "demo",
        help="train a small byte-level model on the embedded corpus with each optimizer",
        description="Train one byte-level MLP on the embedded Shakespeare text (or --data) "
        "with each optimizer from the same start, and print a comparison table.",
    )
    add_dataclass_arguments(demo, DemoConfig)
    demo.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    from .experiments.llm.config import TrainConfig
    from .experiments.llm.recipes import TRAIN_EXPERIMENTS as EXPERIMENTS

    train = sub.add_parser(
        "train",
        help="train the LLaMA-style decoder with one of seed 002's experiments",
        description="Train the byte-level LLaMA-style decoder on the embedded Shakespeare text "
        "(or --data) with one experiment's per-role optimizers; writes "
        "OUT/EXP/{metrics.jsonl,spectra.jsonl,summary.json,checkpoint-STEP/,"
        "tensorboard/}. "
        f"Experiments: {', '.join(EXPERIMENTS)}.",
    )
    add_dataclass_arguments(train, TrainConfig, suppress_defaults=True)
    train.add_argument("--all", action="store_true", help="run every experiment, one after the other")
    train.add_argument(
        "--resume", action="store_true", help="continue OUT/EXP from its last checkpoint (finished runs are skipped)"
    )
    train.add_argument("--config", metavar="FILE", help="a JSON or TOML file of settings; flags override it")
    from .experiments.cifar.cifar import CifarConfig

    cifar = sub.add_parser(
        "cifar",
        help="seed 003's CIFAR-10 MLP with manifold Muon, hyperspherical descent or AdamW",
        description="Train the bias-free MLP 3072-128-64-10 on CIFAR-10 (DATA_DIR/cifar-10-batches-py) "
        "and write OUT/update-U-lr-LR-wd-WD-seed-S.json with the seed's fields.",
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
    sweep = sub.add_parser(
        "sweep",
        help="train experiments x lrs x weight decays x seeds (resumable)",
        description="Run every combination as a modman train run in OUT/EXP--lr-L--wd-W--seed-S/ "
        "(finished runs are skipped, partial ones resumed); then modman analyze OUT "
        "compares each experiment at its best setting.",
    )
    sweep.add_argument(
        "--exp", default=",".join(EXPERIMENTS), metavar="A,B,...", help=f"experiments (default: all {len(EXPERIMENTS)})"
    )
    sweep.add_argument(
        "--lrs",
        default="1x",
        help="0.5x,1x,2x: multiples of each experiment's default lrs, or "
        "0.01,0.02: the lr of its attention and FFN matrices (default: 1x)",
    )
    sweep.add_argument(
        "--weight-decays", "--weight_decays", dest="weight_decays", default="0.1", help="weight decays (default: 0.1)"
    )
    sweep.add_argument("--seeds", default="0", help="seeds (default: 0)")
    sweep.add_argument("--config", metavar="FILE", help="a JSON or TOML file of the other settings; flags override it")
    sweep.add_argument("--analyze", action="store_true", help="write OUT/report/ when the sweep is done")
    add_dataclass_arguments(
        sweep, TrainConfig, suppress_defaults=True, exclude=("exp", "name", "lr", "lr_scale", "weight_decay", "seed")
    )
    analyze = sub.add_parser(
        "analyze",
        help="report on a folder of runs: figures and seed 002's hypotheses H1-H5",
        description="Read every run under DIR (metrics.jsonl, spectra.jsonl, summary.json) and "
        "write DIR/report/report.md with PNG figures (and report.html with --html).",
    )
    analyze.add_argument("dir", metavar="DIR", help="the --out folder of modman train or modman sweep")
    analyze.add_argument(
        "--html", action="store_true", help="also write DIR/report/report.html, one self-contained page"
    )
    from .experiments.cifar.lr_transfer import TransferConfig

    transfer = sub.add_parser(
        "lr-transfer",
        help="does the best lr move with width? modular budgets vs AdamW",
        description="Train the MLP in -> w -> 10 (--depth hidden layers) on pooled CIFAR-10 at each width over an "
        "lr grid, as a modman.modular MLP with ModularDescent and as a torch MLP "
        "with AdamW; writes OUT/*.json, OUT/transfer.png, OUT/transfer.json.",
    )
    add_dataclass_arguments(transfer, TransferConfig)
    roles = sub.add_parser("roles", help="print each parameter's role and the rule an experiment gives it")
    roles.add_argument("--preset", default="small", help="model preset (default: small)")
    roles.add_argument("--exp", default="baseline", help="experiment whose rules to show (default: baseline)")
    roles.add_argument(
        "--model", default="modman", help="modman, or hf:gpt2|hf:llama|hf:qwen2|hf:qwen3|hf:mistral (default: modman)"
    )
    bench = sub.add_parser(
        "bench",
        help="run a benchmark from a source checkout (python -m benchmarks.NAME)",
        description="Run benchmarks/NAME.py of a modman source checkout (the current "
        "folder); options after NAME go to the benchmark (--device, --quick, ...).",
    )
    bench.add_argument("name", choices=BENCHMARKS + ("all",))
    bench.add_argument("options", nargs=argparse.REMAINDER)
    return parser


BENCHMARKS = (
    "msign_accuracy",
    "solvers",
    "optimizer_step",
    "real_gradients",
    "lanes_train",
    "train_speed",
    "stiefel_drift",
    "constrained_step",
)


def _run_bench(args: argparse.Namespace) -> int:
    import importlib.util

    folder = Path.cwd() / "benchmarks"
    if not (folder / "__init__.py").is_file():
        raise UserError(
            f"no benchmarks/ folder in {Path.cwd()}: the benchmarks ship with modman's source, not "
            "with the installed package; cd into a source checkout (the folder holding pyproject.toml "
            "and benchmarks/) and run 'modman bench NAME' or 'python -m benchmarks.NAME' there"
        )
    if "benchmarks" not in sys.modules:  # the checkout's benchmarks package, without putting the cwd on sys.path
        spec = importlib.util.spec_from_file_location(
            "benchmarks", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        if spec is None or spec.loader is None:
            raise UserError(f"{folder / '__init__.py'} cannot be loaded as the benchmarks package")
        sys.modules["benchmarks"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    for name in BENCHMARKS if args.name == "all" else (args.name,):
        print(f"== benchmarks.{name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main(args.options)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    import torch

    from .experiments.common.files import write_json_atomic
    from .experiments.llm.demo import DemoConfig, format_table, run_demo

    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    cfg = DemoConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {cfg.device}: CUDA is not available on this machine; use --device cpu")
    print(
        f"modman demo: {cfg.steps} steps, batch {cfg.batch_size}, hidden {cfg.hidden}, device {cfg.device}",
        file=sys.stderr,
    )
    results = run_demo(
        cfg, progress=lambda r: print(f"  {r['optimizer']}: val loss {r['val_loss']:.3f}", file=sys.stderr, flush=True)
    )
    print(format_table(results))
    if args.json:
        write_json_atomic(args.json, {"config": dataclasses.asdict(cfg), "results": results})
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from .experiments.llm.config import TrainConfig
    from .experiments.llm.runner import format_summaries, load_config_file, run_experiments

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = load_config_file(args.config) if args.config else {}
    settings.update({k: v for k, v in vars(args).items() if k in fields})
    if args.all and "exp" in vars(args):  # a flag given on the command line (a --config file's exp yields to --all)
        raise UserError("give either --exp NAME or --all, not both")
    summaries, failed = run_experiments(settings, run_all=args.all, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 speaks for all
        print(format_summaries(summaries))
    return 3 if failed else 0


def _run_cifar(args: argparse.Namespace) -> int:
    from .experiments.cifar.cifar import CifarConfig, result_name, run_cifar
    from .experiments.common.files import write_json_atomic

    cfg = CifarConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CifarConfig)})
    if args.sweep:
        return _run_cifar_sweep(cfg, args)
    result = run_cifar(
        cfg, progress=lambda e, loss, t: print(f"epoch {e}: loss {loss:.4f}, {t:.1f} s", file=sys.stderr, flush=True)
    )
    path = Path(cfg.out) / result_name(cfg)
    write_json_atomic(path, result)
    print(f"{cfg.update} lr {cfg.lr}: test {result['test_acc']:.2f} %, train {result['train_acc']:.2f} % -> {path}")
    return 0


def _run_cifar_sweep(cfg, args: argparse.Namespace) -> int:
    from .experiments.cifar.sweep import DEFAULT_LRS, best_by_rule, format_best, plot_sweep, run_sweep
    from .experiments.common.files import write_json_atomic

    seeds, lrs = args.seeds, {**DEFAULT_LRS, **args.lrs}
    results = run_sweep(cfg, seeds, lrs, log=lambda line: print(line, file=sys.stderr, flush=True))
    best = best_by_rule(results)
    plot_sweep(results, Path(cfg.out) / "sweep.png")
    write_json_atomic(Path(cfg.out) / "sweep.json", {"seeds": seeds, "lrs": lrs, "best": best})
    print(format_best(best))
    return 0


def _run_sweep(args: argparse.Namespace) -> int:
    from .experiments.llm.config import TrainConfig
    from .experiments.llm.runner import format_summaries, load_config_file
    from .experiments.llm.sweep import parse_list, parse_lrs, run_sweep, sweep_configs

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = load_config_file(args.config) if args.config else {}
    settings.update({k: v for k, v in vars(args).items() if k in fields and k != "exp"})
    exps = [e.strip() for e in args.exp.split(",") if e.strip()]
    configs = sweep_configs(
        settings,
        exps,
        parse_lrs(args.lrs),
        parse_list(args.weight_decays, float, "--weight-decays"),
        parse_list(args.seeds, int, "--seeds"),
    )
    summaries = run_sweep(configs)
    print(format_summaries(summaries))
    if args.analyze:
        return _report(configs[0].out)
    print(f"next: modman analyze {configs[0].out}", file=sys.stderr)
    return 0


def _report(folder: str, html_page: bool = False) -> int:
    from .experiments.report import analyze

    result = analyze(folder, html_page=html_page)
    for line in result["skipped"]:
        print(f"modman analyze: {line}", file=sys.stderr)
    verdicts = ", ".join(f"{k} {v}" for k, v in result["verdicts"].items())
    print(f"{result['runs']} runs -> {result['report']}" + (f" and {result['html']}" if result["html"] else ""))
    print(verdicts)
    return 0


def _run_analyze(args: argparse.Namespace) -> int:
    return _report(args.dir, args.html)


def _run_lr_transfer(args: argparse.Namespace) -> int:
    from .experiments.cifar.lr_transfer import TransferConfig, best_lrs, format_transfer, plot_transfer, run_transfer
    from .experiments.common.files import write_json_atomic

    cfg = TransferConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TransferConfig)})
    results = run_transfer(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    summary = best_lrs(results)
    plot_transfer(results, Path(cfg.out) / "transfer.png")
    write_json_atomic(Path(cfg.out) / "transfer.json", {"config": dataclasses.asdict(cfg), "summary": summary})
    print(format_transfer(summary))
    return 0


def _run_roles(args: argparse.Namespace) -> int:
    import warnings

    from .experiments.llm.roles_report import roles_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report prints the unreached-role warnings itself
        print(roles_report(args.exp, args.preset, args.model))
    return 0


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
        "cifar": _run_cifar,
        "sweep": _run_sweep,
        "analyze": _run_analyze,
        "lr-transfer": _run_lr_transfer,
    }[args.command]
    try:
        return run(args)
    except (UserError, OSError) as e:  # a mistake the user can fix: one line (a bug shows its traceback)
        if args.debug:
            raise
        print(f"modman {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"modman {args.command}: {e or 'interrupted'}", file=sys.stderr)
        return 130
