"""Checkpoints of a training run with ``torch.distributed.checkpoint`` (dcp): model, optimizer, schedule, RNG
and data position, written by every process in parallel and read back on any number of processes.

Layout in the run folder: ``checkpoint-STEP/`` (dcp files) and ``checkpoint.json`` naming the current one.
A checkpoint is written to ``checkpoint-STEP.partial/``, renamed when complete, and only then named in
``checkpoint.json`` (replaced atomically), so a crash at any moment leaves the previous checkpoint whole.

What each process writes: its shards of FSDP2 (DTensor) weights and AdamW moments, the full momentum /
multiplier state of the matrices it owns (``modman.optim.distributed``), and — deduplicated by dcp — the
replicated rest. On load each process reads its shards (dcp reshards when the process count changed) and the
state of the matrices it owns now. Runs saved by older versions (one ``checkpoint.pt``) still load.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from ...errors import UserError
from ...optim.distributed import is_dtensor, state_owners, world
from .files import write_json_atomic

__all__ = [
    "POINTER_NAME",
    "LEGACY_NAME",
    "checkpoint_path",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "remove_stale_temporaries",
]

POINTER_NAME = "checkpoint.json"
LEGACY_NAME = "checkpoint.pt"


class _OlderFormat(Exception):
    """A ``checkpoint.pt`` met by an FSDP2 run."""


def rng_state() -> dict[str, Any]:
    """Every random state a run draws from (torch CPU, and CUDA when present)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ flat keys
_EMPTY_DICT = "<modman: empty dict>"  # dcp drops empty containers; this stands in for one


def _flatten(tree: dict, prefix: tuple = ()) -> dict[str, Any]:
    """Nested dicts → ``{json.dumps(path): leaf}``; int keys (optimizer state) survive the round trip."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = prefix + (k,)
        if isinstance(v, dict) and v and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
            out.update(_flatten(v, path))
        else:
            out[json.dumps(path)] = _EMPTY_DICT if isinstance(v, dict) and not v else v
    return out


def _unflatten(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *parents, last = json.loads(key)
        node = tree
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = {} if isinstance(value, str) and value == _EMPTY_DICT else value
    return tree


# ------------------------------------------------------------------------------------------------ paths
def checkpoint_path(run_dir: str | Path) -> Path | None:
    """The run's current checkpoint (a dcp folder, or an older run's ``checkpoint.pt``); None when there is none."""
    run_dir = Path(run_dir)
    pointer = run_dir / POINTER_NAME
    if pointer.is_file():
        try:
            name = json.loads(pointer.read_text())["dir"]
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise UserError(
                f"checkpoint pointer {pointer} cannot be read ({type(e).__name__}: {e}); move it away "
                "to start the run over"
            ) from None
        if not (isinstance(name, str) and re.fullmatch(r"checkpoint-\d+", name)):
            raise UserError(
                f"checkpoint pointer {pointer} names {name!r}, which is not a checkpoint folder of this "
                "run (checkpoint-STEP); move the pointer away to start the run over"
            )
        return run_dir / name
    legacy = run_dir / LEGACY_NAME
    return legacy if legacy.is_file() else None


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], step: int) -> Path:
    """Collective (every process calls it with its own ``state``): write ``checkpoint-STEP/`` and point to it."""
    run_dir = Path(run_dir)
    name = f"checkpoint-{step:08d}"
    partial, final = run_dir / f"{name}.partial", run_dir / name
    main = world()[0] == 0
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)  # left by a crash
    _barrier()
    try:
        with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.save(
                _flatten(state),
                checkpoint_id=partial,
                no_dist=not _distributed(),
                planner=DefaultSavePlanner(flatten_state_dict=False),
            )  # _flatten's keys, lists kept whole
        _barrier()
        if main:
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            fd = os.open(run_dir, os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename reaches the disk before the pointer names the folder
            finally:
                os.close(fd)
            write_json_atomic(run_dir / POINTER_NAME, {"step": step, "dir": name})
    except (OSError, CheckpointException) as e:  # a full disk, a vanished folder: the previous checkpoint stands
        if main:
            shutil.rmtree(partial, ignore_errors=True)
        kept = checkpoint_path(run_dir)
        raise OSError(
            f"the checkpoint of step {step} could not be written to {run_dir} ({_reason(e)}); "
            f"{f'the previous checkpoint {kept.name} is kept' if kept else 'no earlier checkpoint exists'}. "
            "Free disk space, then continue with --resume"
        ) from None
    if main:
        for old in run_dir.glob("checkpoint-*"):  # older checkpoints, and partial ones left by a crash
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        (run_dir / LEGACY_NAME).unlink(missing_ok=True)
    _barrier()
    return final


def load_checkpoint(
    run_dir: str | Path,
    *,
    keys: set[str] | None = None,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any] | None:
    """The run's checkpoint as the nested dict it was saved from; None when there is none.

    ``keys``: only these top-level entries (e.g. ``{"step", "config"}``, cheap). ``model``: its weights are
    read straight into its (possibly FSDP2-sharded) tensors. ``optimizer``: state is read only for the
    matrices this process owns, AdamW moments of sharded weights as shards. Without them every tensor is
    read whole, on the CPU. A damaged checkpoint raises ValueError naming it.
    """
    path = checkpoint_path(run_dir)
    if path is None:
        return None
    try:
        if path.suffix == ".pt":
            if model is not None and any(is_dtensor(p) for p in model.parameters()):
                raise _OlderFormat(
                    f"checkpoint {path} is in the single-file format of earlier versions, which "
                    "FSDP2 cannot read; resume it once with --parallel none or ddp (its next "
                    "checkpoint is a torch.distributed.checkpoint folder), then with fsdp"
                )
            saved = torch.load(path, map_location="cpu", weights_only=False)
            return saved if keys is None else {k: v for k, v in saved.items() if k in keys}
        reader = dcp.FileSystemReader(path)
        metadata = reader.read_metadata().state_dict_metadata
        templates = _templates(metadata, keys, model, optimizer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(
                templates,
                storage_reader=reader,
                no_dist=not _distributed(),
                planner=DefaultLoadPlanner(flatten_state_dict=False, flatten_sharded_tensors=False),
            )
    except _OlderFormat as e:
        raise UserError(str(e)) from None
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - any read failure means the same to the user
        raise UserError(
            f"checkpoint {path} cannot be read ({_reason(e)}); move it (and {POINTER_NAME}) away to start the run over"
        ) from None
    saved = _unflatten(templates)
    if optimizer is not None and "optimizer" in saved:
        for prefix in state_owners(optimizer):
            node = saved["optimizer"]
            for k in prefix[:-1]:  # a process that owns none of a rule's matrices still gets its "state" dict
                node = node.setdefault(k, {})
    return saved


def _reason(e: BaseException) -> str:
    """One line for an error; dcp's CheckpointException carries each rank's failure (with its traceback)."""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        first = next(iter(failures.values()))
        inner = first[0] if isinstance(first, tuple) else first
        e = inner if isinstance(inner, BaseException) else e
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files an atomic write leaves when its process is killed; returns them."""
    stale = [p for p in Path(run_dir).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _templates(metadata: dict, keys, model, optimizer) -> dict[str, Any]:
    """The flat dict dcp loads into: the model's own tensors, this process's share of the optimizer state,
    and fresh CPU tensors (or None for objects) for the rest."""
    model_sd = model.state_dict() if model is not None else {}
    owners = state_owners(optimizer) if optimizer is not None else {}
    rank = world()[0]
    out: dict[str, Any] = {}
    for key, md in metadata.items():
        path = tuple(json.loads(key))
        if keys is not None and path[0] not in keys:
            continue
        tensor = isinstance(md, TensorStorageMetadata)
        if path[0] == "model" and len(path) == 2 and path[1] in model_sd:
            out[key] = model_sd[path[1]]
            continue
        if path[0] == "optimizer" and owners:
            param, owner = next(
                (owners[path[1:n]] for n in range(len(path), 1, -1) if path[1:n] in owners), (None, None)
            )
            if owner is not None and owner != rank:
                continue  # another process owns this matrix and its state
            if tensor and param is not None and owner is None and is_dtensor(param) and md.size == param.shape:
                out[key] = torch.empty_like(param, dtype=md.properties.dtype)  # a shard, like the weight
                continue
        out[key] = torch.empty(md.size, dtype=md.properties.dtype) if tensor else None
    return out
