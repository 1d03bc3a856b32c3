"""load_pretrained: a HF model folder -> the minivlm model, strictly."""
from pathlib import Path

import torch

from . import families  # noqa: F401  (registers every family)
from .checkpoint import read_checkpoint, read_config, read_generation_config
from .engine import convert
from .registry import family_for


def load_pretrained(folder, dtype=torch.float32, device="cpu"):
    """Build the minivlm model named by config.json's architectures[0] and fill it from the folder's
    weights. Raises a CheckpointError on any missing, unused or mis-shaped tensor. Returns it in eval()."""
    folder = Path(folder)
    config = read_config(folder)
    family = family_for(config, folder)
    model = family.build(config)
    stored = read_checkpoint(folder)
    state = convert(stored, family.keymap(config), model.state_dict(), where=f"checkpoint {folder}")
    model.load_state_dict(state, strict=True)
    model.generation_config = read_generation_config(folder)  # eos / pad ids for generate()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return model.to(device=device, dtype=dtype).eval()
