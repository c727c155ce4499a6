"""`modman cifar` on data each test generates in the standard CIFAR-10 pickle layout (no download)."""

import json
import pickle

import numpy as np
import pytest
import torch

from modman.cli import main
from modman.experiments.cifar.cifar import CifarConfig, load_cifar10, run_cifar


def write_fake_cifar(root, n_train=200, n_test=100, seed=0):
    """Learnable images: each class is a fixed random pattern plus noise, stored as the real files are."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, (10, 3072))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n):
        labels = rng.integers(0, 10, n)
        data = np.clip(patterns[labels] + rng.normal(0, 40, (n, 3072)), 0, 255).astype(np.uint8)
        return {b"data": data, b"labels": labels.tolist()}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(n_train // 5)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test)))
    return root


def test_loader_reads_the_standard_layout(tmp_path):
    data = load_cifar10(write_fake_cifar(tmp_path), download=False)
    assert data["train"][0].shape == (200, 3, 32, 32) and data["test"][1].shape == (100,)
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    first = torch.as_tensor(raw[b"data"][0]).float().reshape(3, 32, 32) / 255
    mean, std = torch.tensor([0.49139968, 0.48215827, 0.44653124]), torch.tensor([0.24703233, 0.24348505, 0.26158768])
    torch.testing.assert_close(data["train"][0][0], (first - mean[:, None, None]) / std[:, None, None])
    assert data["train"][1][:40].tolist() == raw[b"labels"]


@pytest.mark.parametrize("update,lr", [("manifold_muon", 0.1), ("hyperspherical_descent", 0.1), ("adam", 3e-3)])
def test_each_rule_trains_above_chance(tmp_path, update, lr):
    data = load_cifar10(write_fake_cifar(tmp_path), download=False)
    res = run_cifar(CifarConfig(update=update, lr=lr, epochs=15, batch_size=50, device="cpu"), data=data)
    assert res["train_acc"] > 40 and res["test_acc"] > 30, res  # chance is 10 %
    assert len(res["epoch_losses"]) == 15 and res["epoch_losses"][-1] < res["epoch_losses"][0]
    assert [len(s) for s in res["singular_values"]] == [128, 64, 10] and len(res["norms"]) == 3
    if update == "manifold_muon":
        for s in res["singular_values"]:
            assert max(abs(v - 1) for v in s) < 1e-3
    if update == "hyperspherical_descent":
        assert all(abs(n - 1) < 1e-5 for n in res["norms"])


def test_cli_writes_the_seed_file_name_and_fields(tmp_path, capsys):
    write_fake_cifar(tmp_path / "d")
    argv = [
        "cifar",
        "--update",
        "adam",
        "--lr",
        "0.003",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--data-dir",
        str(tmp_path / "d"),
        "--out",
        str(tmp_path / "o"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    res = json.loads((tmp_path / "o" / "update-adam-lr-0.003-wd-0.0-seed-42.json").read_text())
    assert {
        "epochs",
        "lr",
        "seed",
        "wd",
        "update",
        "epoch_losses",
        "epoch_times",
        "test_acc",
        "train_acc",
        "singular_values",
        "norms",
    } <= set(res)


def test_missing_data_is_one_line_saying_where_to_put_it(tmp_path, capsys):
    assert main(["cifar", "--data-dir", str(tmp_path / "none"), "--epochs", "1", "--no-download"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cifar-10-batches-py" in err[0] and "--data-dir" in err[0]


def test_corrupt_batch_file_is_named(tmp_path):
    write_fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3 cannot be read"):
        load_cifar10(tmp_path, download=False)


def test_bad_update_is_refused():
    with pytest.raises(ValueError, match="unknown rule 'sgd'"):
        CifarConfig(update="sgd")


@pytest.mark.slow
def test_sweep_runs_the_grid_skips_finished_runs_and_draws_the_figure(tmp_path, capsys):
    write_fake_cifar(tmp_path / "d")
    argv = [
        "cifar",
        "--sweep",
        "--seeds",
        "0,1",
        "--lrs",
        "adam=1e-3:3e-3,manifold_muon=0.1,hyperspherical_descent=0.1",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--data-dir",
        str(tmp_path / "d"),
        "--out",
        str(tmp_path / "o"),
        "--device",
        "cpu",
        "--no-download",
    ]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert out.err.count("seed") == 8  # 4 (rule, lr) pairs x 2 seeds
    assert "manifold_muon" in out.out and "adam" in out.out
    assert len(list((tmp_path / "o").glob("update-*.json"))) == 8
    assert (tmp_path / "o" / "sweep.png").stat().st_size > 10_000
    best = json.loads((tmp_path / "o" / "sweep.json").read_text())["best"]
    assert best["adam"]["lr"] in (1e-3, 3e-3) and best["adam"]["seeds"] == 2
    assert main(argv) == 0
    assert capsys.readouterr().err.count("seed") == 0  # everything was already there


def test_sweep_bad_grid_is_one_line(tmp_path, capsys):
    for bad, says in (("sgd=0.1", "unknown rule 'sgd'"), ("adam=fast", "'adam=fast' is not RULE=LR:LR")):
        with pytest.raises(SystemExit) as exit_:
            main(["cifar", "--sweep", "--lrs", bad, "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "--lrs" in err and says in err and "Traceback" not in err


def _archive(tmp_path):
    import tarfile

    write_fake_cifar(tmp_path / "src")
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path


def test_download_checks_the_md5_before_unpacking(tmp_path):
    import hashlib

    from modman.experiments.cifar.cifar import download_cifar10

    archive = _archive(tmp_path)
    with pytest.raises(ValueError, match="has MD5 .* expected 0+; it was not unpacked"):
        download_cifar10(tmp_path / "bad", url=archive.as_uri(), md5="0" * 32)
    assert not (tmp_path / "bad" / "cifar-10-batches-py").exists()
    download_cifar10(tmp_path / "good", url=archive.as_uri(), md5=hashlib.md5(archive.read_bytes()).hexdigest())
    assert load_cifar10(tmp_path / "good", download=False)["test"][0].shape == (100, 3, 32, 32)


def test_bad_device_is_one_line(tmp_path, capsys):
    write_fake_cifar(tmp_path / "d")
    assert main(["cifar", "--device", "tpu", "--data-dir", str(tmp_path / "d"), "--no-download"]) == 2
    assert "--device: 'tpu' is not a device" in capsys.readouterr().err
