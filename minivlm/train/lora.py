"""LoRA fine-tuning of a LLaVA's language model (LLaVA's finetune_lora.sh), and what it saves.

    python -m minivlm train llava --data ... --from LLAVA_DIR --stage 2 --lora-rank 128 --lora-alpha 256
    python -m minivlm train llava ... --lora-rank 8 --merge          # a full HF folder, adapters folded in

Stage 2 with LoRA trains the projector in full (as stage 2 does) and, in the language model, only the
LoRA adapters of the target projections (minivlm/adapters/lora.py); every other weight of the LM and
the tower is frozen, so AdamW holds state for the projector and the adapters alone. The run folder is
a PEFT adapter folder (adapter_config.json + adapter_model.safetensors, the projector saved as PEFT's
modules_to_save) next to the tokenizer and processor files, which

    weights_convert.load_pretrained(LLAVA_DIR, adapter=run_folder)
    peft.PeftModel.from_pretrained(transformers_model, run_folder)

both apply to the base model; --merge writes the merged full model instead.
"""
from pathlib import Path

from ..adapters import lora

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # LLaVA's: all


def parse_targets(text: str | None) -> tuple:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else DEFAULT_TARGETS


def apply_lora(model, rank: int, alpha: float | None = None, targets=DEFAULT_TARGETS) -> list[str]:
    """Adapters on the LM's target Linears; the LM's own weights frozen (the projector is left as the
    stage set it). Returns the adapted layers' names. alpha defaults to 2 * rank (LLaVA's 256 for 128)."""
    names = lora.add_adapters(model, rank, 2 * rank if alpha is None else alpha, targets, within="language_model.")
    for name, p in model.language_model.named_parameters():
        p.requires_grad_(".lora_" in name)
    return names


def plain_keys(model) -> list[str]:
    """The model's state-dict keys as they were before the adapters (q_proj.base.weight -> q_proj.weight)."""
    return [k.replace(".base.", ".") for k in model.state_dict() if ".lora_" not in k]


def save(model, folder, hf_config, merge: bool, base_model_name_or_path=None):
    """--merge: fold the adapters in and write the full HF folder; else the PEFT adapter folder."""
    from weights_convert.names import stored_name_of
    from weights_convert.registry import family_for

    from .export import save_pretrained
    keymap = family_for(hf_config, Path(folder)).keymap(hf_config)
    if merge:
        return save_pretrained(lora.merge(model), folder, hf_config)
    trained = [m for m in ("multi_modal_projector",) if any(p.requires_grad for p in model.get_submodule(m).parameters())]
    return lora.save_adapter(model, folder, stored_name_of(keymap, plain_keys(model)), modules_to_save=trained,
                             base_model_name_or_path=base_model_name_or_path)
