"""LlavaNextForConditionalGeneration against transformers: mixed image sizes (different token counts
per image), several images per prompt, feature layer lists, patch sizes, tying; the token-count
property over a sweep of sizes; the 'flat' merge by hand; key spellings; bad input; bf16 on a GPU."""
import itertools
import tempfile

import pytest
import torch
from safetensors.torch import load_file, save_file

import weights_convert
from minivlm.parity import FP32_TOLERANCE
from minivlm.parity.harness import assert_low_precision, build_seeded, convert_reference
from minivlm.parity.llava import labels_for, real_positions
from minivlm.parity.llava_next import CASES, geometry_of, llava_next_batch
from minivlm.processing.anyres import num_image_tokens, num_tiles

SIDES = [1, 3, 13, 27, 50, 104, 301, 1000]
SWEEP = list(itertools.product(SIDES, SIDES))  # 64 sizes, aspect ratios 1:1000 .. 1000:1


def _pair(name):
    reference = build_seeded(next(c for c in CASES if c.name == name).build_reference)
    ours = convert_reference(reference)
    return ours, reference


def _tiles(config, sizes, seed=0):
    inputs = llava_next_batch(config, torch.Generator().manual_seed(seed), [sizes])
    return inputs["pixel_values"], inputs["image_sizes"]


@pytest.mark.parametrize("name", ["seed-27x104-both-ways/loss", "patch-3-wide-grids-gelu-tanh/loss"])
@torch.no_grad()
def test_num_image_tokens_is_what_both_models_produce(name):
    """Property over 64 sizes: our features per image == num_image_tokens == HF's packed features."""
    ours, reference = _pair(name)
    geometry = geometry_of(reference.config)
    pixel_values, image_sizes = _tiles(reference.config, SWEEP)
    mine = ours.get_image_features(pixel_values, image_sizes)
    theirs = reference.get_image_features(pixel_values, image_sizes).pooler_output
    for size, a, b in zip(SWEEP, mine, theirs):
        assert a.shape[0] == num_image_tokens(size, geometry) == b.shape[0], size
        assert (a - b).abs().max() <= FP32_TOLERANCE, size


@torch.no_grad()
def test_flat_merge_is_every_tile_projected_in_order():
    ours, reference = _pair("odd-sizes-several-per-prompt-layer-list/loss")
    ours.config.merge = "flat"
    geometry = ours.config.geometry()
    sizes = [(27, 104), (5, 301), (50, 50)]
    pixel_values, image_sizes = _tiles(reference.config, sizes)
    mine = ours.get_image_features(pixel_values, image_sizes)
    # By hand from HF's parts: each real tile through the tower, layers -3 and -1 without [CLS], projector.
    hf = reference.model
    for size, tiles, got in zip(sizes, pixel_values, mine):
        k = num_tiles(size, geometry)
        states = hf.vision_tower(tiles[:k], output_hidden_states=True).hidden_states
        want = hf.multi_modal_projector(torch.cat([states[-3][:, 1:], states[-1][:, 1:]], -1)).flatten(0, 1)
        assert got.shape[0] == num_image_tokens(size, geometry) == k * 4
        assert (got - want).abs().max() <= FP32_TOLERANCE


@torch.no_grad()
def test_image_newline_is_loaded_and_used():
    """The loaded newline equals HF's, and changing it changes the logits (the comparison can fail)."""
    ours, reference = _pair("seed-27x104-both-ways/loss")
    assert torch.equal(ours.image_newline, reference.model.image_newline)
    inputs = llava_next_batch(reference.config, torch.Generator().manual_seed(3), [[(27, 104)]])
    before = ours(**inputs).logits
    ours.image_newline.add_(1.0)
    assert (ours(**inputs).logits - before).abs().max() > 1e-3


@torch.no_grad()
def test_loads_in_memory_key_spelling():
    """transformers 5's state_dict names (model.image_newline, model.vision_tower.* ...) load too."""
    reference = build_seeded(CASES[0].build_reference)
    renames = [("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector."),
               ("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
               ("image_newline", "model.image_newline")]
    with tempfile.TemporaryDirectory() as saved, tempfile.TemporaryDirectory() as renamed:
        reference.save_pretrained(saved)
        tensors = load_file(f"{saved}/model.safetensors")
        assert "image_newline" in tensors
        out = {}
        for key, value in tensors.items():
            new = next((n + key[len(o):] for o, n in renames if key.startswith(o)), key)
            out[new] = value
        save_file(out, f"{renamed}/model.safetensors", metadata={"format": "pt"})
        with open(f"{saved}/config.json") as src, open(f"{renamed}/config.json", "w") as dst:
            dst.write(src.read())
        ours = weights_convert.load_pretrained(renamed, dtype=torch.float32)
    assert torch.equal(ours.image_newline, reference.model.image_newline)


def test_bad_input_is_refused():
    ours, reference = _pair("seed-27x104-both-ways/loss")
    inputs = llava_next_batch(reference.config, torch.Generator().manual_seed(0), [[(27, 104)]])
    with pytest.raises(ValueError, match="image_sizes"):
        ours(**{k: v for k, v in inputs.items() if k != "image_sizes"})
    # another size with the same tiles but another token count (less padding to cut)
    geometry = geometry_of(reference.config)
    assert num_tiles((5, 104), geometry) == num_tiles((27, 104), geometry)
    assert num_image_tokens((5, 104), geometry) != num_image_tokens((27, 104), geometry)
    wrong = dict(inputs, image_sizes=torch.tensor([[5, 104]]))
    with pytest.raises(ValueError, match="image tokens and image features do not match"):
        ours(**wrong)
    short = dict(inputs, pixel_values=inputs["pixel_values"][:, :1])
    with pytest.raises(ValueError, match="do not fit image_sizes"):
        ours(**short)
    with pytest.raises(ValueError, match="'full' on a tower with \\[CLS\\] leaves 5 features per tile"):
        ours.get_image_features(inputs["pixel_values"], inputs["image_sizes"], vision_feature_select_strategy="full")


@pytest.mark.parametrize("case", [c for c in CASES if c.name.endswith("/loss")], ids=lambda c: c.name)
def test_llava_next_bf16_long_batch(case, bf16_device):
    """bf16 on four longer rows with six images of different sizes: every field within 5e-2 of the
    reference's scale, >= 99% top-1 agreement at real positions."""
    reference = build_seeded(case.build_reference)
    sizes = [[(27, 104), (600, 512)], [(104, 27)], [(5, 301), (50, 50)], [(33, 47)]]
    inputs = llava_next_batch(reference.config, torch.Generator().manual_seed(1), sizes, text_lengths=(40, 33, 25, 47))
    inputs["labels"] = labels_for(inputs, reference.config.image_token_index)
    assert_low_precision(reference, inputs, case.fields, bf16_device,
                         valid_positions=real_positions, name=case.name)
