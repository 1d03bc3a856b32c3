"""CLIP / SigLIP model behaviour beyond parity: clear errors on bad input, the feature contract,
hub-style checkpoints of the towers alone (keys under vision_model. / text_model.), training use."""
import pytest
import torch
from safetensors.torch import load_file, save_file

import weights_convert
from minivlm.models.clip import CLIPConfig, CLIPModel, clip_text_config, clip_vision_config
from minivlm.models.siglip import SiglipConfig, SiglipModel, siglip_text_config, siglip_vision_config
from minivlm.parity.clip import CASES as CLIP_CASES
from minivlm.parity.siglip import CASES as SIGLIP_CASES

TEXT = dict(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=24,
            max_position_embeddings=8)
VISION = dict(image_size=12, patch_size=4, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=24)


def tiny_clip(**text):
    return CLIPModel(CLIPConfig(text=clip_text_config(**{**TEXT, "eos_token_id": 29, **text}),
                                vision=clip_vision_config(**VISION), projection_dim=8)).eval()


def tiny_siglip():
    return SiglipModel(SiglipConfig(text=siglip_text_config(**TEXT, head_size=16),
                                    vision=siglip_vision_config(**VISION))).eval()


def ids_with_eos(batch, length, eos=29):
    ids = torch.randint(3, 20, (batch, length))
    ids[:, -1] = eos
    return ids


@pytest.mark.parametrize("make", [tiny_clip, tiny_siglip])
def test_text_longer_than_position_table(make):
    with pytest.raises(ValueError, match="9 tokens.*max_position_embeddings=8"):
        make().get_text_features(ids_with_eos(2, 9))


@pytest.mark.parametrize("make", [tiny_clip, tiny_siglip])
@pytest.mark.parametrize("shape, message", [((2, 12, 12), "must be a \\(batch, 3, H, W\\)"),
                                            ((2, 1, 12, 12), "1 channels"),
                                            ((2, 3, 16, 12), "16x12 but the model was trained at 12x12")])
def test_wrong_pixel_shape(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make().get_image_features(torch.randn(*shape))


def test_missing_eos_and_bad_mask():
    model = tiny_clip()
    ids = ids_with_eos(2, 6)
    ids[1, -1] = 5
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] contain no eos_token_id=29"):
        model.get_text_features(ids)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.get_text_features(ids_with_eos(2, 6), attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="integer"):
        model.get_text_features(torch.randn(2, 6))
    with pytest.raises(ValueError, match="needs both input_ids and pixel_values"):
        model(input_ids=ids_with_eos(2, 6))


def test_siglip_config_mismatch():
    with pytest.raises(ValueError, match="must be equal"):
        SiglipConfig(text=siglip_text_config(**TEXT, head_size=12), vision=siglip_vision_config(**VISION))


@pytest.mark.parametrize("make", [tiny_clip, tiny_siglip])
def test_features_are_the_unnormalised_embeds(make):
    """Our contract: get_*_features return the (B, E) tensor; forward's embeds are those, unit-normed."""
    model, ids, pixels = make(), ids_with_eos(3, 5), torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        image, text, out = model.get_image_features(pixels), model.get_text_features(ids), model(ids, pixels)
    assert torch.is_tensor(image) and image.shape == out.image_embeds.shape
    torch.testing.assert_close(out.image_embeds, image / image.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(out.text_embeds, text / text.norm(dim=-1, keepdim=True))
    assert out.logits_per_text.shape == (3, 2) and "loss" not in out


@pytest.mark.parametrize("make", [tiny_clip, tiny_siglip])
def test_trains(make):
    model = make().train()
    out = model(ids_with_eos(4, 6), torch.randn(4, 3, 12, 12), return_loss=True)
    out.loss.backward()
    assert model.logit_scale.grad is not None and model.vision_model.patch_embed.proj.weight.grad.abs().sum() > 0


def _case(cases, name):
    return next(c for c in cases if c.name == name)


@pytest.mark.parametrize("cases, name, prefix", [(CLIP_CASES, "clip-vision", "vision_model."),
                                                 (CLIP_CASES, "clip-text-legacy-eos-padded", "text_model."),
                                                 (SIGLIP_CASES, "siglip-vision", "vision_model."),
                                                 (SIGLIP_CASES, "siglip-text-padded", "text_model.")])
def test_tower_checkpoint_in_hub_layout(tmp_path, cases, name, prefix):
    """Hub files of a tower alone keep the `vision_model.` / `text_model.` prefix and, when saved by
    transformers < 4.31, the position_ids buffer; transformers 5 writes neither. Both must load."""
    case = _case(cases, name)
    torch.manual_seed(0)
    reference = case.build_reference().eval()
    reference.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    hub = {prefix + k: v for k, v in state.items()}
    n = reference.embeddings.position_embedding.weight.shape[0]
    hub[prefix + "embeddings.position_ids"] = torch.arange(n)[None]
    save_file(hub, tmp_path / "model.safetensors")
    ours = weights_convert.load_pretrained(tmp_path, dtype=torch.float32)
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(0))
    with torch.no_grad():
        mine, ref = ours(**inputs), reference(**inputs)
    for field in case.fields:
        torch.testing.assert_close(mine[field], getattr(ref, field), atol=1e-5, rtol=0)

    # and a stray tensor is refused, naming it
    hub[prefix + "embeddings.extra"] = torch.zeros(2)
    save_file(hub, tmp_path / "model.safetensors")
    with pytest.raises(Exception, match="embeddings.extra"):
        weights_convert.load_pretrained(tmp_path)


def test_legacy_clip_config_translation():
    """An openai-era config: text eos_token_id 2, *_config_dict, sparse sub-configs filled with HF defaults."""
    from weights_convert.families.clip import clip_config
    cfg = clip_config({"architectures": ["CLIPModel"], "projection_dim": 512,
                       "text_config": {"eos_token_id": 2}, "text_config_dict": {"hidden_size": 64},
                       "vision_config": {"patch_size": 16}})
    assert cfg.text.legacy_eos and cfg.text.hidden_size == 64 and cfg.text.max_position_embeddings == 77
    assert cfg.vision.patch_size == 16 and cfg.vision.hidden_act == "quick_gelu" and not cfg.vision.patch_bias
