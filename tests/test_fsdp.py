"""Every modman optimizer on FSDP2 (DTensor) parameters: 2 gloo processes give the weights of one process,
each matrix updated by one owner rank (uneven shards and an empty shard included)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DRIVER = Path(__file__).with_name("fsdp_optim_driver.py")


def run(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["muon", "manifold_muon", "hyperspherical", "spectral", "stiefel", "hyperball", "spel", "spectral_sphere", "sso"],
)
def test_fsdp2_matches_one_process(tmp_path, name):
    run([str(DRIVER), name, str(tmp_path / "one.pt"), "one"], tmp_path)
    run(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(DRIVER),
            name,
            str(tmp_path / "two.pt"),
            "fsdp",
        ],
        tmp_path,
    )
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one["weights"].keys() == two["weights"].keys()
    for k in one["weights"]:
        assert two["weights"][k].shape == one["weights"][k].shape
        assert (one["weights"][k] - two["weights"][k]).abs().max().item() < 1e-10, k
    # 3 matrices x 4 steps; the owner of the 15x15 matrix (rank 0) updates only it, rank 1 the other two.
    assert one["work"] == 12 and two["work"] == [4, 8]
