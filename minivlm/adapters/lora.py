"""LoRA (Hu et al. 2021): a frozen Linear plus a trainable low-rank update, saved as PEFT saves it.

    y = W x + (alpha / r) * B (A x)        W (out, in) frozen; A (r, in), B (out, r) trained; r << in

B starts at zero, so the adapted model starts exactly as the base model, and A as nn.Linear's own
(Kaiming-uniform) initialisation, as PEFT does. A 7B LLaVA with r=128 on every projection of the LM
trains ~4% of its parameters: AdamW's state shrinks by the same factor, which is what lets LLaVA's
`finetune_lora.sh` run on one GPU. Merging folds the update into the weight, W' = W + (alpha/r) B A,
and the model is a plain one again (what `--merge` exports as a full Hugging Face folder).

The PEFT folder (what `peft.PeftModel.from_pretrained(transformers_model, folder)` reads):

    adapter_config.json         peft_type LORA, r, lora_alpha, target_modules (a regex over the
                                transformers model's module names), modules_to_save
    adapter_model.safetensors   base_model.model.<transformers module>.lora_A.weight / lora_B.weight,
                                and base_model.model.<module>.<param> for each module_to_save

Our module names are not transformers' (`language_model.model.layers.0.attn.q_proj` is
`model.language_model.layers.0.self_attn.q_proj` in a transformers 5 LLaVA): every function that
reads or writes the folder takes `stored_name(ours) -> theirs`, which the family's key map gives.
"""
import json
import os
import re
from pathlib import Path

import torch
from torch import nn

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."


class LoraLinear(nn.Module):
    """`base` (its weight and bias frozen) + scaling * lora_B(lora_A(x)). PEFT's parameter names."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base.requires_grad_(False)
        kw = dict(bias=False, dtype=base.weight.dtype, device=base.weight.device)
        self.lora_A = nn.Linear(base.in_features, rank, **kw)   # Kaiming-uniform, as nn.Linear
        self.lora_B = nn.Linear(rank, base.out_features, **kw)
        nn.init.zeros_(self.lora_B.weight)                       # the update starts at 0
        self.scaling = alpha / rank

    def forward(self, x):  # (..., in) -> (..., out)
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base Linear with the update folded in (W + scaling * B A), computed in fp32."""
        w = self.base.weight
        w.copy_((w.float() + self.scaling * (self.lora_B.weight.float() @ self.lora_A.weight.float())).to(w.dtype))
        return self.base


def _set(model, name, module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def add_adapters(model: nn.Module, rank: int, alpha: float, targets, within: str = "") -> list[str]:
    """Wrap every Linear under `within` (a module name prefix, "" for all) whose own name is one of
    `targets` (e.g. ("q_proj", "v_proj")) in a LoraLinear; returns their names. Refuses a target that
    names no Linear there, so a typo does not train nothing."""
    targets = tuple(targets)
    found = [name for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and name.startswith(within) and name.split(".")[-1] in targets]
    missing = [t for t in targets if not any(n.split(".")[-1] == t for n in found)]
    if missing:
        names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)
                        and n.startswith(within)})
        raise ValueError(f"LoRA target(s) {missing} name no Linear under {within or 'the model'!r}; its Linears are "
                         f"called {names}")
    for name in found:
        _set(model, name, LoraLinear(model.get_submodule(name), rank, alpha))
    return found


def adapted(model: nn.Module) -> dict:
    """{name: LoraLinear} of the model's adapters."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain Linear back (in place)."""
    for name, module in adapted(model).items():
        _set(model, name, module.merged())
    return model


def target_regex(stored_names) -> str:
    """PEFT's target_modules as one regex (re.fullmatch on the transformers model's module names):
    the stored names' common prefix, then any of their last parts, so a vision tower's q_proj of the
    same name is not adapted too."""
    stored_names = sorted(stored_names)
    prefix = os.path.commonprefix(stored_names)
    prefix = prefix[:prefix.rfind(".") + 1] if "." in prefix else ""
    last = sorted({n.split(".")[-1] for n in stored_names})
    return re.escape(prefix) + r".*\.(" + "|".join(last) + ")"


def save_adapter(model: nn.Module, folder, stored_name, modules_to_save=(), base_model_name_or_path=None):
    """Write the PEFT folder of the model's adapters (+ the full weights of `modules_to_save`, our names).
    stored_name(our parameter name) -> transformers' name for it."""
    from safetensors.torch import save_file
    layers = adapted(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters to save")
    first = next(iter(layers.values()))
    tensors, stored_modules = {}, []
    for name, m in layers.items():
        theirs = stored_name(f"{name}.weight").removesuffix(".weight")  # the plain model's key
        stored_modules.append(theirs)
        tensors[f"{PREFIX}{theirs}.lora_A.weight"] = m.lora_A.weight
        tensors[f"{PREFIX}{theirs}.lora_B.weight"] = m.lora_B.weight
    saved_modules = []  # PEFT matches these against the ends of transformers' module names
    for module in modules_to_save:
        for pname, p in model.get_submodule(module).named_parameters():
            theirs = stored_name(f"{module}.{pname}")
            tensors[PREFIX + theirs] = p
        saved_modules.append(theirs.split(".")[-1 - len(pname.split("."))])
    rank = first.lora_A.out_features
    config = dict(peft_type="LORA", task_type=None, r=rank, lora_alpha=first.scaling * rank, lora_dropout=0.0,
                  target_modules=target_regex(stored_modules), modules_to_save=saved_modules or None, bias="none",
                  fan_in_fan_out=False, init_lora_weights=True, use_rslora=False, use_dora=False, inference_mode=True,
                  base_model_name_or_path=base_model_name_or_path)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(folder / WEIGHTS),
              metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_config(folder) -> dict:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"adapter {folder}: no {CONFIG} (expected a PEFT LoRA folder)")
    config = json.loads(path.read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"adapter {folder}: peft_type {config.get('peft_type')!r}, only 'LORA' is supported")
    for unsupported in ("use_dora", "use_rslora", "fan_in_fan_out"):
        if config.get(unsupported):
            raise ValueError(f"adapter {folder}: {unsupported}=true is not supported")
    return config


@torch.no_grad()
def load_adapter(model: nn.Module, folder, stored_name) -> nn.Module:
    """Apply the PEFT LoRA folder to `model` (adapters on the fly; merge(model) folds them in).
    Strict: every tensor of the file must land in the model and every adapted layer must get its two."""
    from safetensors.torch import load_file
    config = read_config(folder)
    stored = load_file(str(Path(folder) / WEIGHTS))
    pattern = re.compile(config["target_modules"]) if isinstance(config["target_modules"], str) else None
    wanted = set(config["target_modules"]) if pattern is None else set()
    ours = {}  # stored module name -> our module name
    for name, m in list(model.named_modules()):
        if not isinstance(m, nn.Linear):
            continue
        theirs = stored_name(f"{name}.weight").removesuffix(".weight")
        if (pattern.fullmatch(theirs) if pattern else theirs.split(".")[-1] in wanted):
            ours[theirs] = name
    used = set()
    for theirs, name in ours.items():
        keys = [f"{PREFIX}{theirs}.lora_{ab}.weight" for ab in "AB"]
        missing = [k for k in keys if k not in stored]
        if missing:
            raise KeyError(f"adapter {folder}: {missing} missing (the config targets {theirs})")
        layer = LoraLinear(model.get_submodule(name), config["r"], config["lora_alpha"])
        layer.lora_A.weight.copy_(stored[keys[0]])
        layer.lora_B.weight.copy_(stored[keys[1]])
        _set(model, name, layer)
        used.update(keys)
    state = {PREFIX + stored_name(k): (k, p) for k, p in model.named_parameters()
             if ".lora_" not in k and ".base." not in k}
    for key in set(stored) - used:
        if key not in state:
            raise KeyError(f"adapter {folder}: {key} matches no layer of the model (unused tensor)")
        state[key][1].copy_(stored[key])  # a module_to_save
        used.add(key)
    return model
