"""LLaVA / LLaVA-NeXT over any tower (CLIP, SigLIP) and any LLaMA-family decoder: the feature counts
each strategy gives, and the refusals. Parity over SigLIP / Mistral / Qwen2 configs is in test_parity.py
(minivlm/parity/llava.py, llava_next.py)."""
import json
import tempfile

import pytest
import torch

import weights_convert
from minivlm.parity.harness import build_seeded, convert_reference
from minivlm.parity.llava_next import build_reference as next_reference
from minivlm.parity.llava_next import geometry_of, llava_next_batch
from minivlm.processing.anyres import num_image_tokens


def _folder_with(reference, folder, **edit):
    reference.save_pretrained(folder)
    path = f"{folder}/config.json"
    config = json.load(open(path))
    for part, fields in edit.items():
        config[part].update(fields)
    json.dump(config, open(path, "w"))
    return folder


def test_unknown_decoder_and_tower_are_refused_by_name():
    reference = build_seeded(lambda: next_reference(dict(vision_feature_select_strategy="full"), (),
                                                    dict(tower="Siglip")))
    with tempfile.TemporaryDirectory() as folder:
        _folder_with(reference, folder, text_config={"model_type": "gemma"})
        with pytest.raises(ValueError, match="text_config: a 'gemma' language model is not supported"):
            weights_convert.load_pretrained(folder)
    with tempfile.TemporaryDirectory() as folder:
        _folder_with(reference, folder, vision_config={"model_type": "dinov2"})
        with pytest.raises(ValueError, match="'dinov2' vision tower is not supported"):
            weights_convert.load_pretrained(folder)


def test_next_siglip_default_is_refused():
    """'default' drops the first token; a SigLIP tile then has n*n - 1 features, which transformers
    cannot lay out as a grid (it fails inside a view), so minivlm refuses the config by name."""
    reference = build_seeded(lambda: next_reference(dict(vision_feature_select_strategy="full"), (),
                                                    dict(tower="Siglip")))
    with tempfile.TemporaryDirectory() as folder:
        _folder_with(reference, folder, **{})
        config = json.load(open(f"{folder}/config.json"))
        config["vision_feature_select_strategy"] = "default"
        json.dump(config, open(f"{folder}/config.json", "w"))
        with pytest.raises(ValueError, match="'default' on a tower without \\[CLS\\] \\(SigLIP\\) leaves 3 features"):
            weights_convert.load_pretrained(folder)


@torch.no_grad()
def test_next_siglip_full_keeps_the_grid():
    """27x104 on 12 px tiles of 2x2 patches: best resolution 12x36 -> 1x3 tiles + base; 'full' on
    SigLIP gives 4 features per tile (no [CLS]); the 2x6 feature grid holds int(27 * 6/104) = 1 image
    row, so 1 row of padding, cut (2 - 1) // 2 = 0 times from each end: 2 rows of 6 (+ newline) stay."""
    reference = build_seeded(lambda: next_reference(dict(vision_feature_select_strategy="full",
                                                         vision_feature_layer=-1), (), dict(tower="Siglip")))
    geometry = geometry_of(reference.config)
    assert geometry.tokens_per_tile == 4 and not geometry.class_token
    assert num_image_tokens((27, 104), geometry) == 4 + 2 * (6 + 1)
    ours = convert_reference(reference)
    inputs = llava_next_batch(reference.config, torch.Generator().manual_seed(0), [[(27, 104)]])
    ours_features = ours.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    ref_features = reference.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
    assert [f.shape[0] for f in ours_features] == [18] == [f.shape[0] for f in ref_features]
    assert (ours_features[0] - ref_features[0]).abs().max() <= 1e-5
