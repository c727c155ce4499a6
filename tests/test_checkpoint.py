"""torch.distributed.checkpoint checkpoints in one process: round trip, crash safety, damaged and older files."""

from __future__ import annotations

import json

import pytest
import torch

from modman.experiments.common.checkpoint import (
    LEGACY_NAME,
    POINTER_NAME,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)


def state(step: int) -> dict:
    return {
        "step": step,
        "model": {"w": torch.randn(3, 4), "b": torch.arange(3.0)},
        "optimizer": {
            "state": {
                0: {"momentum_buffer": torch.randn(3, 4), "step": 7, "solver": "closed_form"},
                2: {"multiplier": torch.randn(4, 4, dtype=torch.float64)},
            },
            "param_groups": [{"lr": 0.1, "params": [0, 1, 2], "msign_dtype": torch.bfloat16, "betas": (0.9, 0.95)}],
        },
        "rng": {"torch": torch.get_rng_state()},
        "window": {},
        "config": {"exp": "muon_all", "role_lr": None},
    }


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_round_trip_keeps_structure_types_and_int_keys(tmp_path):
    saved = state(10)
    path = save_checkpoint(tmp_path, saved, 10)
    assert path == tmp_path / "checkpoint-00000010" and checkpoint_path(tmp_path) == path
    assert json.loads((tmp_path / POINTER_NAME).read_text()) == {"step": 10, "dir": "checkpoint-00000010"}
    loaded = load_checkpoint(tmp_path)
    assert same(saved, loaded)
    assert load_checkpoint(tmp_path, keys={"step", "config"}) == {"step": 10, "config": saved["config"]}


def test_a_new_checkpoint_replaces_the_old_and_a_crash_leaves_the_last_whole_one(tmp_path):
    save_checkpoint(tmp_path, state(10), 10)
    save_checkpoint(tmp_path, state(20), 20)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-00000020"]
    # A crash while writing step 30: a partial folder, the pointer still at 20.
    (tmp_path / "checkpoint-00000030.partial").mkdir()
    (tmp_path / "checkpoint-00000030.partial" / "__0_0.distcp").write_bytes(b"half")
    assert load_checkpoint(tmp_path)["step"] == 20
    save_checkpoint(tmp_path, state(30), 30)
    assert load_checkpoint(tmp_path)["step"] == 30
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-00000030"]


def test_no_checkpoint_is_none_and_damaged_ones_are_named(tmp_path):
    assert load_checkpoint(tmp_path) is None
    path = save_checkpoint(tmp_path, state(5), 5)
    (path / ".metadata").unlink()
    with pytest.raises(ValueError, match="checkpoint-00000005 cannot be read.*move it"):
        load_checkpoint(tmp_path)
    (tmp_path / POINTER_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="checkpoint.json cannot be read"):
        load_checkpoint(tmp_path)


def test_older_runs_single_file_still_loads_and_is_replaced(tmp_path):
    torch.save(state(4), tmp_path / LEGACY_NAME)
    assert load_checkpoint(tmp_path)["step"] == 4
    assert load_checkpoint(tmp_path, keys={"step"}) == {"step": 4}
    save_checkpoint(tmp_path, state(8), 8)
    assert not (tmp_path / LEGACY_NAME).exists() and load_checkpoint(tmp_path)["step"] == 8


def test_an_fsdp2_run_cannot_resume_the_older_format_and_says_how(tmp_path):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    torch.save(state(4), tmp_path / LEGACY_NAME)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = torch.nn.Linear(4, 3)
        mesh = init_device_mesh("cpu", (1,))
        model.weight = torch.nn.Parameter(distribute_tensor(model.weight.detach(), mesh, [Shard(0)]))
        with pytest.raises(ValueError, match="earlier versions.*--parallel none or ddp"):
            load_checkpoint(tmp_path, model=model)
    finally:
        dist.destroy_process_group()
