"""load_pretrained: a HF model folder -> the minivlm model, strictly and leanly.

    1. read config.json; its architectures[0] picks the family (build + key map)
    2. index the weight files: names, shapes, dtypes, no data (checkpoint.py)
    3. build the model with its parameters on the meta device: no memory, no random init (empty.py)
    4. plan: match every stored key to the model through the key map, check every shape — all on
       shapes alone, so a checkpoint that does not fit is refused before any data is read (engine.py)
    5. stream: one file at a time, one tensor at a time, read and placed straight into its parameter
       in the final dtype on the final device
    6. what __init__ computed (RoPE frequencies, ...) moves to the device; eval()

Memory: the weights once, in the target dtype, plus one tensor in flight (a shard for .bin files).
Tensors are read with plain positioned reads into the process's own memory. mmap=True instead
leaves CPU weights stored in the target dtype as the safetensors files' own pages, memory-mapped
copy-on-write (as transformers and torch.load(mmap=True) do): loading is near instant, but decoding
from mapped pages is slower (figures in docs/fast.md). With device="cuda" the host holds one tensor at a time. benchmarks/load_speed.py measures it
against transformers.
"""
from pathlib import Path

import torch

from . import families  # noqa: F401  (registers every family)
from .checkpoint import index_checkpoint, open_weights, read_config, read_generation_config, stored_dtype
from .empty import allocate, assign, materialise_buffers, parameters_on_meta
from .engine import plan
from .registry import family_for


def resolve_dtype(dtype, config, index):
    """A torch dtype, its name ("bfloat16"), or "auto" as transformers 5 reads it: config.json's
    `dtype` (older files: `torch_dtype`), else the dtype of the first floating-point tensor stored."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        named = config.get("dtype") or config.get("torch_dtype")
        return resolve_dtype(named, config, index) if named and named != "auto" else stored_dtype(index)
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise ValueError(f"dtype={dtype!r}: expected a torch dtype, its name (e.g. 'bfloat16') or 'auto'")


def empty_model(family, config):
    """The family's model, its parameters on the meta device (shapes only)."""
    with parameters_on_meta():
        return family.build(config)


def _replace(tensors, old, new):
    """Every name of the allocated tensor `old` (tied weights have two) now points at `new`."""
    for key, t in tensors.items():
        if t is old:
            tensors[key] = new


@torch.no_grad()
def stream_into(folder, load_plan, tensors, mmap=False):
    """Fill `tensors` ({model key: allocated tensor}) from the planned stored tensors, file by file.

    Each tensor is read once, straight into its destination when the bytes are already what it holds,
    else cast / transformed / moved and copied there. mmap=True: a weight that needs nothing done to
    it (same dtype, no transform, on the CPU) becomes the file's own memory-mapped bytes instead."""
    by_file = {}
    for step in load_plan.steps:
        by_file.setdefault(step.file, []).append(step)
    for file, steps in by_file.items():
        reader = open_weights(folder, file)
        for step in steps:
            first = tensors.get(step.targets[0])
            if mmap and step.transform is None and first is not None and first.device.type == "cpu":
                stored = reader.mapped(step.key)
                if stored is not None and stored.dtype == first.dtype:
                    _replace(tensors, first, stored)
                    continue
            # Straight into the destination's memory when the bytes are already what it holds.
            stored = reader.read(step.key, into=first if step.transform is None else None)
            parts = step.transform(stored) if step.transform else stored
            for target, part in zip(step.targets, parts if isinstance(parts, tuple) else (parts,)):
                if target in tensors and part is not tensors[target]:
                    tensors[target].copy_(part)  # casts to the target dtype, moves to the device
            del stored, parts
        reader.close()
    for key, twin in load_plan.tied.items():  # a tie the model does not share by itself
        if tensors[key] is not tensors[twin]:
            tensors[key].copy_(tensors[twin])


def load_pretrained(folder: str | Path, dtype: torch.dtype | str = "auto", device: str | torch.device = "cpu",
                    mmap: bool = False, adapter: str | Path | None = None, fast: bool = True) -> torch.nn.Module:
    """Build the minivlm model named by config.json's architectures[0] and fill it from the folder's
    weights, in eval() mode.

    dtype: a torch dtype, its name, or "auto" (the default, as in transformers 5): the dtype the
    checkpoint was saved in — config.json's `dtype` / `torch_dtype`, else the stored tensors' — so a
    7B fp16 checkpoint loads in 13.5 GB, not 27. Parity checks in fp32 ask for torch.float32.
    device: where the weights land ("cuda" reads each tensor to the GPU; the host holds one at a time).
    mmap: on the CPU, weights already in the target dtype stay the files' memory-mapped pages (loads in
    a fraction of a second, pages read on first use) instead of being read into the process's own
    memory. Off by default: a decode step streams every weight per token, and from mapped file pages
    it ran slower (docs/fast.md, benchmarks/load_speed.py); the peak memory is the same.

    fast: apply minivlm.fast.fast_inference, the module swaps proven bit-equal to the readable modules
    (in-place activations and residuals at inference, the one-row matvec route where this CPU's probe
    passed it); fast=False gives the modules exactly as the files write them (docs/fast.md).

    adapter: a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors, minivlm/adapters/
    lora.py) applied on top: its layers run base + update on the fly (lora.merge(model) folds them in).

    Strict: any missing, unused or mis-shaped tensor raises a CheckpointError naming every one of them
    (missing ones as the file would spell them), before any data is read.
    """
    folder = Path(folder)
    config = read_config(folder)
    family = family_for(config, folder)
    index = index_checkpoint(folder)
    dtype = resolve_dtype(dtype, config, index)
    model = empty_model(family, config)
    load_plan = plan(index, family.keymap(config), model.state_dict(keep_vars=True), where=f"checkpoint {folder}")
    tensors = allocate(model, dtype, device)
    stream_into(folder, load_plan, tensors, mmap=mmap)
    assign(model, tensors)
    materialise_buffers(model, device)
    model.generation_config = read_generation_config(folder)  # eos / pad ids for generate()
    if adapter is not None:
        from minivlm.adapters.lora import load_adapter

        from .names import stored_name_of
        load_adapter(model, adapter, stored_name_of(family.keymap(config), model.state_dict()))
    if fast:
        from minivlm.fast import fast_inference
        fast_inference(model)
    return model.eval()
