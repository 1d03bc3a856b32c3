"""LlavaForConditionalGeneration against transformers: feature layer / strategy, several images per
prompt, left padding, GQA, tying, no-image prompts; the three key spellings of LLaVA files; bf16."""
import json
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import weights_convert
from minivlm.parity import FP32_TOLERANCE
from minivlm.parity.harness import assert_low_precision, build_seeded
from minivlm.parity.llava import CASES, labels_for, llava_batch, real_positions
from weights_convert.errors import CheckpointError


def _reference(name="several-images-per-prompt/loss"):
    return build_seeded(next(c for c in CASES if c.name == name).build_reference)


def _inputs(reference, images=(2, 0, 1), seed=5):
    inputs = llava_batch(reference.config, torch.Generator().manual_seed(seed), images)
    inputs["labels"] = labels_for(inputs, reference.config.image_token_index)
    return inputs


# transformers 5 writes vision_tower.*, multi_modal_projector.*, language_model.model.*, language_model.lm_head.*
HUB = [("vision_tower.", "vision_tower.vision_model.")]            # llava-hf files on the hub
IN_MEMORY = [("vision_tower.", "model.vision_tower."),               # transformers 5's state_dict names
             ("multi_modal_projector.", "model.multi_modal_projector."),
             ("language_model.model.", "model.language_model."),
             ("language_model.lm_head.", "lm_head.")]


def _renamed_copy(saved, target, renames):
    """The checkpoint in `saved` with its keys renamed by prefix, written to `target`."""
    tensors = load_file(f"{saved}/model.safetensors")
    out = {}
    for key, value in tensors.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    save_file(out, f"{target}/model.safetensors", metadata={"format": "pt"})
    (Path(target) / "config.json").write_text((Path(saved) / "config.json").read_text())
    return out


@pytest.mark.parametrize("renames", [HUB, IN_MEMORY], ids=["hub-llava-hf-names", "transformers5-state-dict-names"])
@torch.no_grad()
def test_loads_every_key_spelling(renames):
    reference = _reference("layer-list-tied-mqa/loss")
    inputs = _inputs(reference, images=(1, 2))
    with tempfile.TemporaryDirectory() as saved, tempfile.TemporaryDirectory() as renamed:
        reference.save_pretrained(saved)
        keys = _renamed_copy(saved, renamed, renames)
        assert any(k.startswith(renames[0][1]) for k in keys)  # the rename really happened
        ours = weights_convert.load_pretrained(renamed, dtype=torch.float32)
    real = inputs["attention_mask"].bool()
    a, b = ours(**inputs), reference(**inputs)
    assert (a.logits - b.logits)[real].abs().max() <= FP32_TOLERANCE
    assert (a.loss - b.loss).abs() <= FP32_TOLERANCE


def test_file_with_two_spellings_of_one_tensor_is_refused():
    reference = _reference("default-layer-2-gqa/loss")
    with tempfile.TemporaryDirectory() as saved:
        reference.save_pretrained(saved)
        tensors = load_file(f"{saved}/model.safetensors")
        tensors["model.multi_modal_projector.linear_1.weight"] = tensors["multi_modal_projector.linear_1.weight"].clone()
        save_file(tensors, f"{saved}/model.safetensors", metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match="multi_modal_projector.linear_1.weight.* filled twice"):
            weights_convert.load_pretrained(saved)


def test_unimplemented_language_model_is_refused():
    """Llama, Mistral and Qwen2 decoders load (test_parity); another text_config.model_type is refused by name."""
    reference = _reference("default-layer-2-gqa/loss")
    with tempfile.TemporaryDirectory() as saved:
        reference.save_pretrained(saved)
        config = json.loads(Path(saved, "config.json").read_text())
        config["text_config"]["model_type"] = "gemma"
        Path(saved, "config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match="'gemma' language model is not supported"):
            weights_convert.load_pretrained(saved)


@pytest.mark.parametrize("case", [c for c in CASES if c.name.endswith("/loss")], ids=lambda c: c.name)
def test_llava_bf16_long_batch(case, bf16_device):
    """bf16 on four longer left-padded rows (the cases' own batches are short): every field within 5e-2
    of the reference's scale, >= 99% top-1 agreement at real positions."""
    reference = build_seeded(case.build_reference)
    images = {"several-images-per-prompt": (2, 0, 1, 1), "layer-list-tied-mqa": (1, 2, 0, 1),
              "no-image-prompt": (0, 0, 0, 0)}.get(case.name.split("/")[0], (1, 1, 1, 1))
    inputs = llava_batch(reference.config, torch.Generator().manual_seed(1), images, text_lengths=(40, 33, 25, 47))
    inputs["labels"] = labels_for(inputs, reference.config.image_token_index)
    assert_low_precision(reference, inputs, case.fields, bf16_device,
                         valid_positions=real_positions, name=case.name)
