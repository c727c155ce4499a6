"""``modman cifar``: the blog's CIFAR-10 MLP (3072→128→64→10, no bias) with manifold Muon, hyperspherical
descent or AdamW, built on modman's optimizers. Same defaults as the blog's ``main.py``: batch 1024, lr
decayed linearly to 0, 5 epochs, lr 0.1, seed 42.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from ...optim import HypersphericalDescent, ManifoldMuon
from ..common.data import DataError
from ..common.environment import resolve_device

__all__ = ["CifarConfig", "CifarMLP", "UPDATES", "download_cifar10", "load_cifar10", "run_cifar", "result_name"]

UPDATES = ("manifold_muon", "hyperspherical_descent", "adam")
# torchvision's normalisation in the blog (per-channel mean and std of the training set).
MEAN = (0.49139968, 0.48215827, 0.44653124)
STD = (0.24703233, 0.24348505, 0.26158768)


@dataclass
class CifarConfig:
    """Settings of ``modman cifar`` (the blog's flags, plus epochs, data dir, out dir and device)."""

    HELP: ClassVar[dict[str, str]] = {
        "update": "the rule of all three matrices: manifold_muon, hyperspherical_descent or adam (the blog's names)",
        "lr": "learning rate (a step length on the manifold for manifold_muon and hyperspherical_descent)",
        "wd": "weight decay (adam only; the manifold rules are bounded by their constraint)",
        "seed": "seed of the initial weights and of the batch order",
        "epochs": "passes over the 50,000 training images",
        "batch_size": "images per optimizer step",
        "data_dir": "folder holding cifar-10-batches-py/ (or where to download it)",
        "out": "folder of the result files",
        "device": "auto (CUDA when present, else CPU), cpu, cuda or cuda:N",
        "download": "download CIFAR-10 (170 MB) into --data-dir when it is not there",
    }

    update: str = "manifold_muon"
    lr: float = 0.1
    wd: float = 0.0
    seed: int = 42
    epochs: int = 5
    batch_size: int = 1024
    data_dir: str = "data"
    out: str = "results"
    device: str = "auto"
    download: bool = True

    def __post_init__(self):
        if self.update not in UPDATES:
            raise UserError(f"--update: unknown rule {self.update!r}; choose one of: {', '.join(UPDATES)}")
        if not (self.lr >= 0 and self.wd >= 0):
            raise UserError(f"--lr and --wd must be >= 0; got lr={self.lr}, wd={self.wd}")
        if self.epochs < 1 or self.batch_size < 1:
            raise UserError(f"--epochs and --batch-size must be >= 1; got {self.epochs}, {self.batch_size}")


class CifarMLP(nn.Module):
    """``fc3(relu(fc2(relu(fc1(x)))))`` on flattened 32×32×3 images, no biases (the blog's reference code)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32 * 32 * 3, 128, bias=False)
        self.fc2 = nn.Linear(128, 64, bias=False)
        self.fc3 = nn.Linear(64, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 32 * 32 * 3)  # (B, 3072)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))  # (B, 10)


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with open(path, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        data, labels = d[b"data"], d[b"labels"]
    except (OSError, pickle.UnpicklingError, KeyError, EOFError, TypeError) as e:
        raise DataError(
            f"CIFAR-10 file {path} cannot be read ({type(e).__name__}); replace it with the "
            "file from the standard cifar-10-python.tar.gz"
        ) from None
    x = torch.as_tensor(data, dtype=torch.uint8).reshape(-1, 3, 32, 32)
    return x, torch.as_tensor(list(labels), dtype=torch.long)


CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"  # of cifar-10-python.tar.gz, as published and as torchvision checks


def download_cifar10(data_dir: str | Path, url: str = CIFAR_URL, md5: str = CIFAR_MD5) -> None:
    """Fetch the archive (torchvision when installed, else urllib), check its MD5, unpack it in ``data_dir``."""
    try:
        import torchvision
    except ImportError:
        torchvision = None
    if torchvision is not None and url == CIFAR_URL:
        torchvision.datasets.CIFAR10(root=str(data_dir), train=True, download=True)  # checks the MD5 itself
        return
    import hashlib
    import tarfile
    import tempfile
    import urllib.request

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as fh:
            digest = hashlib.md5()
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                fh.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(
                f"the CIFAR-10 archive from {url} has MD5 {digest.hexdigest()}, expected {md5}; "
                "it was not unpacked. Download it again or place the files by hand"
            )
        with tarfile.open(archive) as tar:
            tar.extractall(data_dir, filter="data")


def load_cifar10(data_dir: str | Path, *, download: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Normalised train/test tensors from ``DATA_DIR/cifar-10-batches-py`` (the standard pickle layout).

    Missing files with ``download``: the standard archive is fetched and its MD5 checked
    (``download_cifar10``); offline, DataError says where to put the files.
    """
    root = Path(data_dir) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if not all((root / n).is_file() for n in names) and download:
        try:
            download_cifar10(data_dir)
        except DataError:
            raise
        except Exception:  # noqa: BLE001 - offline or a failing mirror: the message below says what to do
            pass
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 not found: {root} lacks {', '.join(missing)}. Put the standard "
            f"cifar-10-batches-py folder (from cifar-10-python.tar.gz) in {Path(data_dir)}, or pass "
            "--data-dir; online it is downloaded there"
        )
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    out = {}
    for split, files in (("train", names[:5]), ("test", names[5:])):
        xs, ys = zip(*(_read_batch(root / n) for n in files))
        out[split] = ((torch.cat(xs).float() / 255 - mean) / std, torch.cat(ys))
    return out


def result_name(cfg: CifarConfig) -> str:
    return f"update-{cfg.update}-lr-{cfg.lr}-wd-{cfg.wd}-seed-{cfg.seed}.json"


def _optimizer(cfg: CifarConfig, model: nn.Module):
    if cfg.update == "adam":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
    if cfg.update == "hyperspherical_descent":  # every weight on the unit sphere, as the blog
        return HypersphericalDescent(model.parameters(), lr=cfg.lr)
    return ManifoldMuon(model.parameters(), lr=cfg.lr)  # every weight on Stiefel (radius 1), as the blog


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, batch_size: int) -> float:
    correct = sum(
        int((model(xb.to(device)).argmax(1) == yb.to(device)).sum())
        for xb, yb in zip(x.split(batch_size), y.split(batch_size))
    )
    return 100.0 * correct / len(y)


def run_cifar(cfg: CifarConfig, data: dict | None = None, progress=None) -> dict:
    """Train and evaluate once; returns the blog's record (epoch losses/times, accuracies, spectra, norms)."""
    device = resolve_device(cfg.device)
    data = data if data is not None else load_cifar10(cfg.data_dir, download=cfg.download)
    x_train, y_train = data["train"]
    torch.manual_seed(cfg.seed)
    model = CifarMLP().to(device)
    opt = _optimizer(cfg, model)  # manifold rules project the weights here, as the blog does before training
    batches_per_epoch = -(-len(y_train) // cfg.batch_size)
    total, step = cfg.epochs * batches_per_epoch, 0
    gen = torch.Generator().manual_seed(cfg.seed)
    epoch_losses, epoch_times = [], []
    for _ in range(cfg.epochs):
        start, running = time.perf_counter(), 0.0
        order = torch.randperm(len(y_train), generator=gen)
        for idx in order.split(cfg.batch_size):
            loss = F.cross_entropy(model(x_train[idx].to(device)), y_train[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for g in opt.param_groups:
                g["lr"] = cfg.lr * (1 - step / total)  # the blog's linear decay to 0
            opt.step()
            step += 1
            running += loss.item()
        epoch_losses.append(running / batches_per_epoch)
        epoch_times.append(time.perf_counter() - start)
        if progress is not None:
            progress(len(epoch_losses), epoch_losses[-1], epoch_times[-1])
    model.eval()
    weights = [p.detach().to("cpu", torch.float64) for p in model.parameters()]
    return {
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "wd": cfg.wd,
        "update": cfg.update,
        "epoch_losses": epoch_losses,
        "epoch_times": epoch_times,
        "test_acc": accuracy(model, data["test"][0], data["test"][1], device, cfg.batch_size),
        "train_acc": accuracy(model, x_train, y_train, device, cfg.batch_size),
        "singular_values": [torch.linalg.svdvals(w).tolist() for w in weights],
        "norms": [float(torch.linalg.vector_norm(w)) for w in weights],
        "config": asdict(cfg),
    }
