"""Reading what a Hugging Face model folder holds: config.json and the weight files — lazily.

Weights come as one model.safetensors, as shards listed in model.safetensors.index.json, or as the
older pytorch_model.bin (possibly sharded too). Loading happens in two passes so that a 7B
checkpoint never sits in memory twice:

    index_checkpoint(folder)   {key as stored: StoredTensor(meta tensor, file)} — names, shapes and
                               dtypes only (a safetensors header; a .bin memory-mapped), no data
    open_weights(folder, file) a reader for one file: reader.read(key, into=...) reads one tensor,
                               straight into the destination's memory where it can

A safetensors file is 8 bytes (little-endian header length), a JSON header
{key: {"dtype", "shape", "data_offsets": [begin, end]}} and the raw bytes. Two ways to get a tensor:

    reader.mapped(key)   the tensor IS the file's bytes, memory-mapped copy-on-write (as
                         torch.load(mmap=True) does): no copy, pages read when first used. For a
                         weight kept on the CPU in its stored dtype, which is the common case.
    reader.read(key)     one positioned read into a tensor of our own (into= the destination): for
                         a cast, a transform or a GPU. Copying out of a mapping instead would keep
                         the mapped pages resident until the shard is closed — the shard twice.
"""
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError, MissingConfigError


@dataclass
class StoredTensor:
    tensor: torch.Tensor   # shape and dtype as stored; on the meta device when only indexed
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
    index = _read_json(folder / index_name)
    files = sorted(set(index["weight_map"].values()))
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"{folder / index_name} lists shards that are not there: {missing}")
    return files


def weight_files(folder):
    """The weight files of a folder, in the order of preference HF uses (safetensors first)."""
    folder = Path(folder)
    for single, index in [("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")]:
        if (folder / single).is_file():
            return [single]
        if (folder / index).is_file():
            return _shard_files(folder, index)
    raise CheckpointError(f"no weights in {folder}: expected model.safetensors, model.safetensors.index.json, "
                          f"pytorch_model.bin or pytorch_model.bin.index.json")


# safetensors ------------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool,
                      "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


class SafetensorsFile:
    """One .safetensors file: its header parsed once, then a positioned read per tensor."""

    def __init__(self, path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            size = self.path.stat().st_size
            (length,) = struct.unpack("<Q", f.read(8)) if size >= 8 else (None,)
            if length is None or 8 + length > size:
                raise CheckpointError(f"{self.path} is not a safetensors file (truncated header)")
            try:
                header = json.loads(f.read(length))
            except ValueError as e:
                raise CheckpointError(f"{self.path} has an unreadable safetensors header: {e}") from None
        header.pop("__metadata__", None)
        self.data_start, self.entries, self.size, self.storage = 8 + length, {}, size, None
        for key, info in header.items():
            if info["dtype"] not in SAFETENSORS_DTYPES:
                raise CheckpointError(f"{key} in {self.path.name} has dtype {info['dtype']}, which minivlm "
                                      f"does not read (known: {', '.join(SAFETENSORS_DTYPES)})")
            dtype, shape = SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"])
            begin, end = info["data_offsets"]
            if end - begin != dtype.itemsize * _numel(shape) or self.data_start + end > size:
                raise CheckpointError(f"{key} in {self.path.name}: {end - begin} bytes stored for shape {shape} "
                                      f"{info['dtype']} (the file is truncated or corrupt)")
            self.entries[key] = (dtype, shape, self.data_start + begin)

    def keys(self):
        return self.entries.keys()

    def meta(self, key):
        dtype, shape, _ = self.entries[key]
        return torch.empty(shape, dtype=dtype, device="meta")

    def mapped(self, key):
        """The stored tensor backed by the file itself (copy-on-write), or None where its offset is
        not a multiple of its item size (a tensor cannot start mid-element)."""
        dtype, shape, offset = self.entries[key]
        if offset % dtype.itemsize:
            return None
        if self.storage is None:
            self.storage = torch.UntypedStorage.from_file(str(self.path), shared=False, nbytes=self.size)
        return torch.empty((), dtype=dtype).set_(self.storage, offset // dtype.itemsize, shape)

    def read(self, key, into=None):
        """The tensor as stored. `into`: a contiguous CPU tensor of the same shape and dtype to read
        straight into (no second copy); otherwise a new tensor."""
        dtype, shape, offset = self.entries[key]
        if into is None or into.device.type != "cpu" or into.dtype != dtype or tuple(into.shape) != shape \
                or not into.is_contiguous():
            into = torch.empty(shape, dtype=dtype)
        view = memoryview(into.reshape(-1).view(torch.uint8).numpy())  # the tensor's own bytes
        with open(self.path, "rb", buffering=0) as f:
            f.seek(offset)
            done = 0
            while done < len(view):  # a read may return less than asked (large tensors)
                n = f.readinto(view[done:])
                if not n:
                    raise CheckpointError(f"{self.path.name} ends inside {key}")
                done += n
        return into

    def close(self):
        self.storage = None  # tensors mapped from it keep the mapping alive


class TorchBinFile:
    """One pytorch_model.bin: torch.load memory-mapped and weights_only (a checkpoint is data, never
    code to run). Tensors are read from the mapping when copied; closing drops it."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            state = torch.load(str(self.path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (pre-1.6, non-zip) format cannot be memory-mapped
            state = torch.load(str(self.path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.path} does not hold a state dict (found {type(state).__name__})")
        self.state = state

    def keys(self):
        return self.state.keys()

    def meta(self, key):
        return torch.empty_like(self.state[key], device="meta")

    def mapped(self, key):
        return None  # its tensors are mapped, but the file is a zip: copy them out instead

    def read(self, key, into=None):
        return self.state[key]

    def close(self):
        self.state = None


def open_weights(folder, file):
    path = Path(folder) / file
    return SafetensorsFile(path) if file.endswith(".safetensors") else TorchBinFile(path)


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def index_checkpoint(folder):
    """{key as stored: StoredTensor(meta tensor, file)} over all weight files of the folder: what is
    there, its shape and dtype, without reading any tensor's data."""
    folder = Path(folder)
    out = {}
    for name in weight_files(folder):
        reader = open_weights(folder, name)
        for key in reader.keys():
            if key in out:
                raise CheckpointError(f"tensor {key!r} is stored twice: in {out[key].file} and in {name}")
            out[key] = StoredTensor(reader.meta(key), name)
        reader.close()
    return out


def stored_dtype(index):
    """transformers' rule for dtype="auto" when config.json names none: the dtype of the first
    floating-point tensor of the first weight file, keys in sorted order (how safetensors lists
    them; a file may hold fp32 norms beside bf16 matrices); float32 for a file without one."""
    first_file = next(iter(index.values())).file if index else None
    for key in sorted(k for k, item in index.items() if item.file == first_file):
        t = index[key].tensor
        if t.is_floating_point() and t.dtype.itemsize > 1:  # fp8 is not a compute dtype
            return t.dtype
    return torch.float32
