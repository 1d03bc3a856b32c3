"""Sharded checkpoints with PyTorch's distributed checkpoint (DCP): each rank writes its own shard, and a
run can resume on a different number of ranks. Used by the loop under --strategy fsdp.

A checkpoint is a folder <dir>/step-00000120/ holding

    state/                 DCP's files: __<rank>_0.distcp (each rank's shards of the weights and of
                           AdamW's moments) and .metadata (which slice of which tensor is where)
    train_state.json       the step, the schedule's state, the loss history (rank 0)
    rng-rank<r>.json       each rank's random states (torch, numpy, python, extra generators)
    manifest.json          the step, the number of ranks, and every file's size and sha256

Nothing is pickled: tensors are DCP's own format, everything else JSON. Writing is atomic as in
checkpointing.py (a step-N.tmp folder, renamed when complete; the manifest written last), and
reading verifies every file against the manifest first (checkpointing.verify).

Resharding: DCP stores each tensor as slices with their global offsets, and a load asks for the slices
this rank's (possibly different) sharding needs, so 2 ranks -> 1 or 1 -> 2 just works for the weights
and the optimizer state. The loop requires grad_accum x ranks to stay the same, so every step trains
on the same batches. The random states are per rank and cannot be split or joined: a rank that did
not exist in the saved run takes rank (r mod saved ranks)'s, which is exact for anything drawn
identically on every rank (data order, shared generators) and a fresh stream otherwise (dropout).
"""
import base64
import json
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from . import checkpointing, distributed
from .checkpointing import CheckpointError, _fsync_write

TRAIN_STATE = "train_state.json"


# --- random states as JSON ------------------------------------------------------------------------------

def _bytes(t):
    return base64.b64encode(t.numpy().tobytes()).decode()


def _tensor(text):
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_json(generators=()) -> dict:
    """checkpointing.rng_state, made of JSON values (the torch states are bytes, base64)."""
    state = checkpointing.rng_state(generators)
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    version, mt, gauss_next = state["python"]
    out = dict(torch=_bytes(state["torch"]), numpy=[kind, keys.tolist(), pos, has_gauss, gauss],
               python=[version, list(mt), gauss_next], generators=[_bytes(s) for s in state["generators"]])
    if "cuda" in state:
        out["cuda"] = [_bytes(s) for s in state["cuda"]]
    return out


def rng_from_json(j: dict) -> dict:
    kind, keys, pos, has_gauss, gauss = j["numpy"]
    version, mt, gauss_next = j["python"]
    state = dict(torch=_tensor(j["torch"]), numpy=(kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss),
                 python=(version, tuple(mt), gauss_next), generators=[_tensor(s) for s in j["generators"]])
    if "cuda" in j:
        state["cuda"] = [_tensor(s) for s in j["cuda"]]
    return state


# --- save / load -------------------------------------------------------------------------------------

def _write_json(path, value):
    _fsync_write(path, lambda f: f.write(json.dumps(value).encode()))


def save(folder, step, model, optimizer, train_state: dict, generators=(), keep=3):
    """Write checkpoint `step` (every rank calls this). `model` is what the optimizer updates (the
    FSDP-sharded module, or a plain one); train_state: JSON values (step, schedule, history)."""
    final, tmp = checkpointing.begin(folder, step)
    model_state, optim_state = get_state_dict(model, optimizer)  # DTensor shards under FSDP
    dcp.save(dict(model=model_state, optimizer=optim_state), checkpoint_id=str(tmp / "state"))
    _write_json(tmp / f"rng-rank{distributed.rank()}.json", rng_json(generators))
    if distributed.is_main():
        _write_json(tmp / TRAIN_STATE, train_state)
    return checkpointing.commit(folder, step, final, tmp, keep, format="dcp")


def load(path, model, optimizer):
    """Load checkpoint `path` into `model` and `optimizer` (resharded to this run's ranks); returns
    (train_state, this rank's random states for checkpointing.set_rng_state)."""
    path = Path(path)
    manifest = checkpointing.verify(path)
    if manifest.get("format") != "dcp":
        raise CheckpointError(f"checkpoint {path} was written by a --strategy ddp run (one state.pt); resume it "
                              f"with --strategy ddp")
    model_state, optim_state = get_state_dict(model, optimizer)  # what this rank holds: the slices to read
    state = dict(model=model_state, optimizer=optim_state)
    dcp.load(state, checkpoint_id=str(path / "state"))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    saved_world = manifest["world_size"]
    rng = json.loads((path / f"rng-rank{distributed.rank() % saved_world}.json").read_text())
    return json.loads((path / TRAIN_STATE).read_text()), rng_from_json(rng)
