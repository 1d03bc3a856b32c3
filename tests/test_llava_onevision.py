"""LLaVA-OneVision: its token counts against HF's processor formulas, its image processor against
HF's PIL backend (through load_image_processor), the SigLIP LLaVA-NeXT processor of the seed, and
the errors for mismatched images / videos. Model parity (several images, videos, shrunk grids) is
in test_parity.py (minivlm/parity/llava_onevision.py)."""
import json
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import weights_convert
from minivlm.models.llava_onevision import max_tiles_of, onevision_image_tokens, video_tokens
from minivlm.parity.harness import build_seeded, convert_reference
from minivlm.parity.llava_onevision import CASES
from minivlm.processing.anyres import AnyresGeometry
from minivlm.processing.llava_onevision import LlavaOnevisionImageProcessor

transformers = pytest.importorskip("transformers")
from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor  # noqa: E402

SIZES = [(27, 104), (104, 27), (1, 1), (5, 301), (301, 5), (50, 50), (384, 384), (1000, 700), (2000, 150),
         (13, 7), (767, 1153), (2304, 2304)]


@pytest.mark.parametrize("aspect", ["anyres_max_9", "anyres_max_1", "anyres_max_4"])
@pytest.mark.parametrize("tile, patch", [(384, 14), (12, 6), (12, 4)])
def test_token_counts_match_hf_processor(tile, patch, aspect):
    """onevision_image_tokens and video_tokens against LlavaOnevisionProcessor's own formulas (its
    methods on a stand-in holding the fields they read, so no tokenizer is needed)."""
    pinpoints = [[tile * r, tile * c] for r in range(1, 7) for c in range(1, 7)]
    n = tile // patch
    geometry = AnyresGeometry(pinpoints, tile, patch, "full", class_token=False)
    proc = SimpleNamespace(image_processor=SimpleNamespace(image_grid_pinpoints=pinpoints),
                           num_image_tokens=n * n, vision_aspect_ratio=aspect, video_token="V")
    proc._get_unpadded_features = lambda *a: LlavaOnevisionProcessor._get_unpadded_features(proc, *a)
    for size in SIZES:
        expected = LlavaOnevisionProcessor._get_number_of_features(proc, *size, tile, tile)
        assert onevision_image_tokens(size, geometry, max_tiles_of(aspect)) == expected, size
        assert onevision_image_tokens(size, geometry, max_tiles_of(aspect), tiled=False) == n * n + 1
    for frames in (1, 4, 7):
        video = {"pixel_values_videos": [torch.zeros(frames, 3, tile, tile)]}
        assert video_tokens(frames, n) == len(LlavaOnevisionProcessor.replace_video_token(proc, video, 0))


def test_aspect_ratio_names_are_checked():
    assert max_tiles_of("anyres_max_9") == 9
    with pytest.raises(ValueError, match="'anyres_max_<N>'"):
        max_tiles_of("anyres")


def random_image(height, width, seed=0, mode="RGB"):
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(data[..., 0] if mode == "L" else data, mode)


def load_pair(cls, overrides):
    hf = getattr(transformers, cls)(**overrides)
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = weights_convert.load_image_processor(folder)
    return ours, hf


def assert_same(ours, hf, images, fields=("image_sizes",)):
    a, b = ours(images), hf(images, return_tensors="pt")
    assert a["pixel_values"].shape == b["pixel_values"].shape
    for name in fields:
        assert torch.equal(a[name], torch.as_tensor(b[name]).long()), name
    diff = (a["pixel_values"] - b["pixel_values"]).abs()
    one_grey = 1 / 255 / min(ours.image_std)
    assert diff.max() <= one_grey + 1e-6 and diff.mean() <= 1e-3, (diff.max(), diff.mean())
    return a


TINY = dict(size={"height": 24, "width": 24}, image_grid_pinpoints=[[24 * r, 24 * c] for r in (1, 2, 3) for c in (1, 2, 3)],
            image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.3, 0.25], resample=2)


@pytest.mark.parametrize("overrides", [dict(), TINY], ids=["hf-defaults-384", "tiny-24-bilinear"])
def test_onevision_processor_matches_hf(overrides):
    ours, hf = load_pair("LlavaOnevisionImageProcessorPil", overrides)
    assert isinstance(ours, LlavaOnevisionImageProcessor)
    fields = ("image_sizes", "batch_num_images")
    # one image per prompt (tiled): the seed's 27x104 both ways, a thin strip, other modes
    out = assert_same(ours, hf, [random_image(27, 104), random_image(104, 27, 1), random_image(5, 301, 2, "L")],
                      fields)
    assert out["batch_num_images"].tolist() == [1, 1, 1]
    # several images in a prompt (squared with the mean colour, one tile each) next to a single one
    out = assert_same(ours, hf, [[random_image(33, 47, 3, "RGBA"), random_image(200, 31, 4)], [random_image(50, 50, 5)]],
                      fields)
    assert out["batch_num_images"].tolist() == [2, 1] and out["pixel_values"].shape[0] == 3
    assert out["pixel_values"][0, 1:].abs().max() == 0  # the several-image ones are one tile, padded
    assert_same(ours, hf, random_image(7, 9, 6), fields)


def test_siglip_llava_next_processor_seed_example():
    """The seed: a SigLIP LLaVA-NeXT processor at 384 px with 384-multiple pinpoints; a 27x104 image
    picks [384, 384] (every canvas keeps all its pixels; the least wasted wins), so pixel_values are
    (1, 2, 3, 384, 384): the resized original and one tile."""
    config = dict(size={"height": 384, "width": 384}, crop_size={"height": 384, "width": 384}, resample=3,
                  image_mean=[0.5] * 3, image_std=[0.5] * 3,
                  do_center_crop=False, image_grid_pinpoints=[[384 * r, 384 * c] for r in (1, 2, 3) for c in (1, 2, 3)])
    ours, hf = load_pair("LlavaNextImageProcessorPil", config)
    assert_same(ours, hf, [random_image(27, 104), random_image(300, 1000, 1), random_image(60, 61, 2, "L")])
    out = assert_same(ours, hf, random_image(27, 104))
    assert out["pixel_values"].shape == (1, 2, 3, 384, 384) and out["image_sizes"].tolist() == [[27, 104]]


@torch.no_grad()
def test_mismatched_images_and_videos_are_refused():
    case = next(c for c in CASES if c.name == "several-images-and-videos-odd-grid/loss")
    reference = build_seeded(case.build_reference)
    ours = convert_reference(reference)
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(0))
    video, image = reference.config.video_token_index, reference.config.image_token_index
    one_less = inputs["input_ids"].clone()
    one_less[one_less == video] = 5
    with pytest.raises(ValueError, match=r"video tokens and video features do not match: input_ids hold 0 video"):
        ours(**dict(inputs, input_ids=one_less))
    with pytest.raises(ValueError, match="video token\\(s\\) .* but no pixel_values_videos"):
        ours(**{k: v for k, v in inputs.items() if k != "pixel_values_videos"})
    fewer_frames = inputs["pixel_values_videos"][:, :1]
    with pytest.raises(ValueError, match="video tokens and video features do not match"):
        ours(**dict(inputs, pixel_values_videos=fewer_frames))
    # reading every image tiled (no batch_num_images) changes the counts: refused, not garbage
    with pytest.raises(ValueError, match="image tokens and image features do not match"):
        ours(**{k: v for k, v in inputs.items() if k != "batch_num_images"})
    with pytest.raises(ValueError, match=r"batch_num_images \[1, 1\] counts 2 images, image_sizes has 3"):
        ours(**dict(inputs, batch_num_images=torch.tensor([1, 1])))
    no_images = inputs["input_ids"].clone()
    assert (no_images == image).any()
    with pytest.raises(ValueError, match="image tokens .* no pixel_values"):
        ours(**{k: v for k, v in inputs.items() if k not in ("pixel_values", "image_sizes", "batch_num_images")})


def test_onevision_config_defaults_and_refusals():
    reference = build_seeded(next(c for c in CASES).build_reference)
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        config = json.load(open(f"{folder}/config.json"))
        model = weights_convert.load_pretrained(folder)
        assert model.config.max_tiles == 1 and model.config.vision_feature_select_strategy == "full"
        assert not model.config.vision_config.class_token
        config["vision_aspect_ratio"] = "square"
        json.dump(config, open(f"{folder}/config.json", "w"))
        with pytest.raises(ValueError, match="anyres_max_<N>"):
            weights_convert.load_pretrained(folder)


@torch.no_grad()
def test_real_widths_onevision_qwen2_0_5b(tmp_path):
    """llava-onevision-qwen2-0.5b's widths with the depth cut to one layer each: SigLIP-so400m at 384/14
    (27 x 27 patches: the conv never reads the last 6 pixels), Qwen2-0.5B (896 wide, 14 heads over 2 KV
    heads, vocabulary 151936, tied), the hub's pinpoints and anyres_max_9. A 40 x 60 image on one tile:
    int(40 * 27/60) = 18 rows saw it, the 9 padding rows are cut (9 // 2 = 4) from each end, 19 stay:
    729 base features + 19 x (27 + newline). Compared: the last logits, the image features, greedy ids."""
    vision = transformers.SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_attention_heads=16,
                                             num_hidden_layers=1, patch_size=14, image_size=384, vision_use_head=False)
    text = transformers.Qwen2Config(hidden_size=896, intermediate_size=4864, num_attention_heads=14,
                                    num_key_value_heads=2, num_hidden_layers=1, vocab_size=151936,
                                    tie_word_embeddings=True, rope_parameters={"rope_type": "default",
                                                                               "rope_theta": 1000000.0})
    torch.manual_seed(0)
    reference = transformers.LlavaOnevisionForConditionalGeneration(transformers.LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=151646, video_token_index=151647)).eval()
    ours = convert_reference(reference, tmp_path)
    geometry = ours.config.geometry()
    assert geometry.patches_per_side == 27
    image_tokens = onevision_image_tokens((40, 60), geometry, 9)
    assert image_tokens == 729 + 19 * 28
    generator = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.randint(0, 151000, (5,), generator=generator), torch.full((image_tokens,), 151646),
                     torch.randint(0, 151000, (7,), generator=generator)])[None]
    inputs = dict(input_ids=ids, pixel_values=torch.randn(1, 2, 3, 384, 384, generator=generator),
                  image_sizes=torch.tensor([[40, 60]]))
    a, b = ours(**inputs, logits_to_keep=4), reference(**inputs, logits_to_keep=4)
    assert (a.logits - b.logits).abs().max() <= 1e-4
    assert (a.image_hidden_states - b.image_hidden_states).abs().max() <= 1e-4
    assert torch.equal(ours.generate(**inputs, max_new_tokens=3),
                       reference.generate(**inputs, max_new_tokens=3, do_sample=False))
