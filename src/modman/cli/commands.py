"""What each ``modman`` command runs: read its parsed options, call the experiment layer, print the result."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from ..errors import UserError
from .parser import BENCHMARKS


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

    from ..experiments.common.files import write_json_atomic
    from ..experiments.llm.demo import DemoConfig, format_table, run_demo

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


def _train_settings(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict:
    """TrainConfig settings from ``--config FILE``, overridden by the flags given (``skip``: set per run)."""
    from ..experiments.llm.config import TrainConfig
    from ..experiments.llm.runner import load_config_file

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - set(skip)
    settings = load_config_file(args.config) if args.config else {}
    settings.update({k: v for k, v in vars(args).items() if k in fields})
    return settings


def _run_train(args: argparse.Namespace) -> int:
    from ..experiments.llm.config import TrainConfig
    from ..experiments.llm.runner import format_summaries, run_experiments

    settings = _train_settings(args)
    if args.all and "exp" in vars(args):  # a flag given on the command line (a --config file's exp yields to --all)
        raise UserError("give either --exp NAME or --all, not both")
    summaries, failed = run_experiments(settings, run_all=args.all, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 speaks for all
        return 3 if failed else 0
    print(format_summaries(summaries))
    out = settings.get("out", TrainConfig.out)
    if len(summaries) > 1 and args.report:
        try:  # the runs are done and saved; a folder the report refuses (runs of other settings) is not a failure
            _report(out, html_page=True)
        except UserError as e:
            print(f"modman train: no report: {e}", file=sys.stderr)
    elif len(summaries) == 1:
        print(f"next: modman analyze {out} --html  (the report of every run in {out})", file=sys.stderr)
    return 3 if failed else 0


def _run_cifar(args: argparse.Namespace) -> int:
    from ..experiments.cifar.cifar import CifarConfig, result_name, run_cifar
    from ..experiments.common.files import write_json_atomic

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
    from ..experiments.cifar.sweep import DEFAULT_LRS, best_by_rule, format_best, plot_sweep, run_sweep
    from ..experiments.common.files import write_json_atomic

    seeds, lrs = args.seeds, {**DEFAULT_LRS, **args.lrs}
    results = run_sweep(cfg, seeds, lrs, log=lambda line: print(line, file=sys.stderr, flush=True))
    best = best_by_rule(results)
    plot_sweep(results, Path(cfg.out) / "sweep.png")
    write_json_atomic(Path(cfg.out) / "sweep.json", {"seeds": seeds, "lrs": lrs, "best": best})
    print(format_best(best))
    return 0


def _run_sweep(args: argparse.Namespace) -> int:
    from ..experiments.llm.runner import format_summaries
    from ..experiments.llm.sweep import parse_list, parse_lrs, run_sweep, sweep_configs

    settings = _train_settings(args, skip=("exp",))
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
        return _report(configs[0].out, html_page=True)
    print(f"next: modman analyze {configs[0].out}", file=sys.stderr)
    return 0


# H5 of the LLM experiment plan: a Stiefel experiment, manifold Muon, and the baseline as the control.
NO_DECAY_DEFAULT = ("stiefel_all", "manifold_muon", "baseline")


def _run_tune(args: argparse.Namespace) -> int:
    from ..experiments.llm.config import TrainConfig
    from ..experiments.llm.sweep import parse_list
    from ..experiments.llm.tune import TuneSpec, format_tune, tune, tune_summary

    settings = _train_settings(args, skip=("exp",))
    exps = [e.strip() for e in args.exp.split(",") if e.strip()]
    if settings.get("model", "modman") != "modman" and "modular" in exps:
        exps.remove("modular")  # it trains its own modman.modular GPT
    if args.no_decay is None:
        no_decay = [e for e in NO_DECAY_DEFAULT if e in exps]
    else:
        no_decay = [e.strip() for e in args.no_decay.split(",") if e.strip()]
    seeds = tuple(parse_list(args.seeds, int, "--seeds"))
    spec = TuneSpec(tuple(exps), seeds, args.points, args.max_extend, tuple(no_decay))
    if args.max_runs is not None and args.max_runs < 0:
        raise UserError(f"--max-runs must be >= 0; got {args.max_runs}")
    ended = tune(settings, spec, max_runs=args.max_runs, timing=args.timing)
    print(format_tune(tune_summary(spec, ended)))
    out = settings.get("out", TrainConfig.out)
    if args.analyze:
        return _report(out, html_page=True)
    print(f"next: modman analyze {out} --html", file=sys.stderr)
    return 0


def _report(folder: str, html_page: bool = False) -> int:
    from ..experiments.report import analyze

    result = analyze(folder, html_page=html_page)
    for line in result["skipped"]:
        print(f"modman analyze: {line}", file=sys.stderr)
    verdicts = ", ".join(f"{k} {v}" for k, v in result["verdicts"].items())
    print(f"report of {result['runs']} runs: {result['html'] or result['report']}")
    if result["html"]:
        print(f"(markdown and PNG figures beside it: {result['report']})")
    print(f"hypotheses: {verdicts}")
    return 0


def _run_analyze(args: argparse.Namespace) -> int:
    return _report(args.dir, args.html)


def _run_compare(args: argparse.Namespace) -> int:
    from ..experiments.report.compare import write_comparison

    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    path = write_comparison(args.dirs, args.out, labels)
    print(path.read_text(), end="")
    print(f"comparison: {path} (numbers: {path.with_suffix('.json')})", file=sys.stderr)
    return 0


def _run_lr_transfer(args: argparse.Namespace) -> int:
    from ..experiments.cifar.lr_transfer import TransferConfig, best_lrs, format_transfer, plot_transfer, run_transfer
    from ..experiments.common.files import write_json_atomic

    cfg = TransferConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TransferConfig)})
    results = run_transfer(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    summary = best_lrs(results)
    plot_transfer(results, Path(cfg.out) / "transfer.png")
    write_json_atomic(Path(cfg.out) / "transfer.json", {"config": dataclasses.asdict(cfg), "summary": summary})
    print(format_transfer(summary))
    return 0


def _run_corpus(args: argparse.Namespace) -> int:
    from ..experiments.common.data import python_stdlib_text, sha256
    from ..experiments.common.files import atomic_file

    text, info = python_stdlib_text()
    with atomic_file(args.out, "wb") as fh:
        fh.write(text)
    print(
        f"{args.out}: {len(text) / 1e6:.1f} MB, {info['files']} files of Python {info['python']}'s standard library "
        f"({info['root']}; {len(info['skipped'])} not UTF-8, skipped), sha256 {sha256(text)}"
    )
    return 0


def _run_roles(args: argparse.Namespace) -> int:
    import warnings

    from ..experiments.llm.roles_report import roles_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report prints the unreached-role warnings itself
        print(roles_report(args.exp, args.preset, args.model))
    return 0
