"""Every family's default without a download: a tiny model built the same way for all.

The family's module writes config.json (and a tokenizer, a preprocessor config); transformers
builds its model from that config with a fixed seed and saves the weights beside it; ours is loaded
from the folder through weights_convert.load_pretrained, the path a real checkpoint takes. Without
transformers, ours gets HF's kind of init from our own seeded generator (other numbers, so its words
differ from a compared run's).
"""
import json
from pathlib import Path

import torch

from .families import Loaded, family


def transformers_or_none():
    """transformers, quietened, or None where it is not installed."""
    try:
        import transformers
    except ImportError:
        return None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def init_like_hf(model, std=0.02, seed=0):
    """Without transformers: normal(0, std) weights, zero biases, unit norms — HF's init, our seed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def build_default(model: str, folder, seed=0, reference=True):
    """Write `model`'s tiny checkpoint folder: the family's files, and HF's seeded weights when
    transformers is there and `reference`. Returns transformers' model, or None."""
    module, variant = family(model)
    Path(folder).mkdir(parents=True, exist_ok=True)
    config = module.write_tiny(folder, variant)
    (Path(folder) / "config.json").write_text(json.dumps(config))
    transformers = transformers_or_none() if reference else None
    if transformers is None:
        return None
    model_class = getattr(transformers, config["architectures"][0])
    torch.manual_seed(seed)
    hf = model_class(model_class.config_class(**{k: v for k, v in config.items() if k != "architectures"}))
    hf.eval().save_pretrained(folder)
    return hf


def load_default(model: str, folder, seed=0, reference=True) -> Loaded:
    """`model`'s tiny default built in `folder`: ours and transformers' (or None)."""
    import weights_convert
    from weights_convert.registry import family_for
    hf = build_default(model, folder, seed, reference)
    if hf is not None:
        ours = weights_convert.load_pretrained(folder, dtype=torch.float32)
    else:
        config = json.loads((Path(folder) / "config.json").read_text())
        torch.manual_seed(seed)
        ours = family_for(config).build(config)
        init_like_hf(ours, seed=seed)
        ours.eval()
    return Loaded(ours, hf, str(folder), family(model)[1])


def load_folder(folder, dtype=torch.float32, device="cpu", reference=True, variant=None) -> Loaded:
    """A checkpoint folder: ours strictly through weights_convert, the reference through
    transformers' own from_pretrained of the class config.json names (local files only)."""
    import weights_convert
    from weights_convert.checkpoint import read_config
    ours = weights_convert.load_pretrained(folder, dtype=dtype, device=device)
    transformers = transformers_or_none() if reference else None
    hf = None
    if transformers is not None:
        arch = read_config(folder)["architectures"][0]
        hf = getattr(transformers, arch).from_pretrained(folder, dtype=dtype).to(device).eval()
    return Loaded(ours, hf, str(folder), variant)
