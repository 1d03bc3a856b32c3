"""Reading what a Hugging Face model folder holds: config.json and the weight files.

Weights come as one model.safetensors, as shards listed in model.safetensors.index.json, or
as the older pytorch_model.bin (possibly sharded too). We return every tensor with the name of
the file it came from, so that errors can say where a bad tensor lives.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError, MissingConfigError


@dataclass
class StoredTensor:
    tensor: torch.Tensor
    file: str


def read_config(folder):
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingConfigError(f"{folder} is not a directory; load_pretrained expects a HF model folder")
    path = folder / "config.json"
    if not path.is_file():
        raise MissingConfigError(f"no config.json in {folder}: cannot tell which model this checkpoint is")
    return _read_json(path)


def read_generation_config(folder):
    """The special ids of generation_config.json (what transformers' generate takes from it), or {}."""
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return {}
    stored = _read_json(path)
    return {k: stored[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if stored.get(k) is not None}


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def _shard_files(folder, index_name):
    index = json.loads((folder / index_name).read_text())
    files = sorted(set(index["weight_map"].values()))
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"{folder / index_name} lists shards that are not there: {missing}")
    return files


def _read_safetensors(path):
    from safetensors.torch import load_file
    return load_file(str(path))


def _read_bin(path):
    # weights_only: a checkpoint is data, never code to execute.
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return state


def weight_files(folder):
    """The weight files of a folder, in the order of preference HF uses (safetensors first)."""
    folder = Path(folder)
    for single, index, reader in [("model.safetensors", "model.safetensors.index.json", _read_safetensors),
                                  ("pytorch_model.bin", "pytorch_model.bin.index.json", _read_bin)]:
        if (folder / single).is_file():
            return [single], reader
        if (folder / index).is_file():
            return _shard_files(folder, index), reader
    raise CheckpointError(f"no weights in {folder}: expected model.safetensors, model.safetensors.index.json, "
                          f"pytorch_model.bin or pytorch_model.bin.index.json")


def read_checkpoint(folder):
    """{key as stored: StoredTensor} over all weight files of the folder."""
    folder = Path(folder)
    files, reader = weight_files(folder)
    out = {}
    for name in files:
        for key, tensor in reader(folder / name).items():
            if key in out:
                raise CheckpointError(f"tensor {key!r} is stored twice: in {out[key].file} and in {name}")
            out[key] = StoredTensor(tensor, name)
    return out
