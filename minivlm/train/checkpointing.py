"""Checkpoints a killed run can resume from exactly, written so that a crash never leaves a half one.

A checkpoint is a folder <dir>/step-00000120/ holding

    state.pt          model, optimiser and scheduler state, the step, the loss history so far
    rng-rank<r>.pt    each rank's random states: torch (CPU and CUDA), numpy, python, extra generators
    manifest.json     the step and, for every file above, its size and sha256

Writing is atomic: everything goes into a temporary folder (step-00000120.tmp), then one rename
(os.replace) makes it a checkpoint. A run killed while writing leaves only a *.tmp folder, which is
never read. Reading verifies every file against the manifest first: a truncated or altered file is
refused with its name (CheckpointError), never loaded. Only the newest `keep` checkpoints stay.

Restoring the random states is what makes a resumed run continue bit for bit: dropout masks, ITM
negatives and data order are drawn from the same generators as in the run that was killed.
"""
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from . import distributed

MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is incomplete, truncated, altered or written by an incompatible run."""


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_write(path, write):
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def rng_state(generators=()):
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate(),
                 generators=[g.get_state() for g in generators])
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, generators=()):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if len(state["generators"]) != len(generators):
        raise CheckpointError(f"the checkpoint holds {len(state['generators'])} extra generator state(s), "
                              f"this run has {len(generators)}")
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)


def step_dir(folder, step):
    return Path(folder) / f"step-{step:08d}"


def save(folder, step, state, generators=(), keep=3):
    """Write checkpoint `step` under `folder` (every rank calls this: rank 0 writes state.pt and the
    manifest, each rank its own random states). Returns the checkpoint's path."""
    final = step_dir(folder, step)
    tmp = final.with_name(final.name + ".tmp")
    if distributed.is_main():
        shutil.rmtree(tmp, ignore_errors=True)  # a write killed earlier
        tmp.mkdir(parents=True)
    distributed.barrier()
    _fsync_write(tmp / f"rng-rank{distributed.rank()}.pt", lambda f: torch.save(rng_state(generators), f))
    distributed.barrier()
    if distributed.is_main():
        _fsync_write(tmp / "state.pt", lambda f: torch.save(state, f))
        files = {p.name: dict(bytes=p.stat().st_size, sha256=_sha256(p)) for p in sorted(tmp.iterdir())}
        manifest = dict(step=step, world_size=distributed.world_size(), files=files)
        _fsync_write(tmp / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        if final.exists():  # the same step written again (a resumed run re-saving): replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoints(folder)[:-keep] if keep else []:
            shutil.rmtree(old)
    distributed.barrier()
    return final


def checkpoints(folder):
    """Complete checkpoints under `folder`, oldest first (*.tmp folders are writes that never finished)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-")
                  and not p.name.endswith(".tmp"))


def verify(path):
    """The manifest of checkpoint `path`, after checking every file it lists; raises CheckpointError."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {path} has no {MANIFEST}: it is incomplete or not a checkpoint")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST} is unreadable ({e})") from None
    for name, expected in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path}: {name} is missing")
        size = f.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(f"checkpoint {path}: {name} is {size} bytes, the manifest says "
                                  f"{expected['bytes']} (truncated or altered); refusing to load it")
        digest = _sha256(f)
        if digest != expected["sha256"]:
            raise CheckpointError(f"checkpoint {path}: {name} has sha256 {digest[:16]}..., the manifest says "
                                  f"{expected['sha256'][:16]}... (corrupted); refusing to load it")
    return manifest


def load(path):
    """(state, this rank's random states) of a verified checkpoint; set_rng_state(rng) restores the
    latter. The files are torch.load-ed in full (weights_only=False: they hold numpy / python RNG
    states) only after their checksums matched what this code wrote."""
    path = Path(path)
    try:
        manifest = verify(path)
    except CheckpointError as e:
        older = [p.name for p in checkpoints(path.parent) if p.name < path.name]
        hint = (f" (delete the folder {path} to resume from {older[-1]})" if older else
                f" (it is the only checkpoint: delete the folder {path} and resume from the start)")
        raise CheckpointError(f"{e}{hint}") from None
    if manifest.get("world_size", 1) != distributed.world_size():
        raise CheckpointError(f"checkpoint {path} was written by {manifest.get('world_size')} rank(s), this run "
                              f"has {distributed.world_size()}; resume with the same number of processes")
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    rng = torch.load(path / f"rng-rank{distributed.rank()}.pt", map_location="cpu", weights_only=False)
    return state, rng


def latest(folder):
    """The newest complete checkpoint under `folder`, or None. It is verified when loaded: a corrupted
    newest checkpoint is refused, not skipped (delete it to resume from the one before)."""
    found = checkpoints(folder)
    return found[-1] if found else None
