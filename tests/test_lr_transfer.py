"""modman lr-transfer on generated CIFAR files: the grid, skipping finished runs, best-lr shifts, figure, bad flags."""

from __future__ import annotations

import json

import pytest
import torch
from test_cifar import write_fake_cifar

from modman.cli import main
from modman.experiments.cifar.lr_transfer import TransferConfig, best_lrs, prepare_inputs


def test_inputs_are_pooled_and_unit_rms():
    data = {"train": (torch.randn(5, 3, 32, 32) * 3, torch.arange(5))}
    x, y = prepare_inputs(data, 4)["train"]
    assert x.shape == (5, 192) and torch.equal(y, torch.arange(5))
    assert torch.allclose(x.square().mean(1), torch.ones(5), atol=1e-5)


def test_best_lr_and_its_shift_in_grid_steps():
    def r(method, width, lr, loss):
        return {"method": method, "width": width, "lr": lr, "final_train_loss": loss, "test_acc": 50.0}

    results = [
        r("modular", 64, 0.5, 1.2),
        r("modular", 64, 1.0, 1.1),
        r("modular", 256, 0.5, 1.0),
        r("modular", 256, 1.0, 1.05),
        r("adamw", 64, 1e-3, 1.0),
        r("adamw", 64, 2e-3, 1.2),
        r("adamw", 64, 4e-3, None),
        r("adamw", 256, 1e-3, 2.0),
        r("adamw", 256, 2e-3, 1.5),
        r("adamw", 256, 4e-3, 1.4),
    ]
    summary = best_lrs(results)
    assert summary["modular"]["best_lr"] == {64: 1.0, 256: 0.5} and summary["modular"]["shift_in_grid_steps"] == 1
    assert summary["adamw"]["best_lr"] == {64: 1e-3, 256: 4e-3} and summary["adamw"]["shift_in_grid_steps"] == 2


@pytest.mark.slow
def test_cli_runs_the_grid_skips_finished_runs_and_draws_the_figure(tmp_path, capsys):
    write_fake_cifar(tmp_path / "d", n_train=300, n_test=100)
    argv = [
        "lr-transfer",
        "--data-dir",
        str(tmp_path / "d"),
        "--out",
        str(tmp_path / "o"),
        "--widths",
        "8,32",
        "--modular-lrs",
        "0.25,1",
        "--adamw-lrs",
        "1e-3,4e-3",
        "--steps",
        "20",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--no-download",
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err.count("] modular width") == 4 and err.count("] adamw width") == 4
    assert "the best lr moves by" in out
    files = sorted(p.name for p in (tmp_path / "o").glob("*-w*-lr*.json"))
    assert len(files) == 8 and "modular-w32-lr0.25.json" in files
    run = json.loads((tmp_path / "o" / "modular-w32-lr1.json").read_text())
    assert run["final_train_loss"] < 2.3 and run["config"]["depth"] == 1  # below chance (ln 10) on learnable data
    summary = json.loads((tmp_path / "o" / "transfer.json").read_text())["summary"]
    assert set(summary) == {"modular", "adamw"} and summary["modular"]["shift_in_grid_steps"] in (0, 1)
    assert (tmp_path / "o" / "transfer.png").stat().st_size > 10_000
    assert main(argv) == 0  # every run exists: read back, nothing trained
    assert "] modular width" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--widths", "8,x"], "--widths"),
        (["--pool", "3"], "--pool must divide 32"),
        (["--modular-lrs", "0,1"], "--modular-lrs"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, capsys, argv, match):
    code = None
    try:
        code = main(["lr-transfer", "--data-dir", str(tmp_path), "--no-download", *argv])
    except SystemExit as e:  # argparse's own type errors
        code = e.code
    assert code == 2 and match in capsys.readouterr().err


def test_missing_data_names_the_folder(tmp_path, capsys):
    assert (
        main(["lr-transfer", "--data-dir", str(tmp_path / "none"), "--no-download", "--out", str(tmp_path / "o")]) == 2
    )
    assert "cifar-10-batches-py" in capsys.readouterr().err


def test_config_checks_widths_are_integers():
    with pytest.raises(ValueError, match="--widths"):
        TransferConfig(widths=[1.5])
