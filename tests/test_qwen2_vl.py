"""Qwen2-VL's pieces against transformers and by hand; whole-model parity cases run in test_parity.py.

The Conv3d patch embedding is one Linear; the two packing paths (per-image split, block-diagonal
mask) agree with each other and with both attention kernels; the vision RoPE positions, the M-RoPE
position index and cos/sin equal HF's functions; the hub's key layout and config.json (top-level
text fields, rope_scaling type "mrope") load; bad grids and token counts fail by name.
"""
import json

import pytest
import torch
from safetensors.torch import save_file

import weights_convert
from minivlm.blocks import set_attention_impl
from minivlm.blocks.rotary import RotaryEmbedding, mrope_cos_sin, vision_rope_2d
from minivlm.models.mrope_positions import rope_index
from minivlm.parity import qwen2_vl as cases
from minivlm.parity.harness import build_seeded
from minivlm.vision.packed import PatchEmbedding3D, block_diagonal_mask, patch_positions

transformers = pytest.importorskip("transformers")


def converted_case(name, tmp_path_factory):
    """A parity case's HF reference, ours loaded from its save, its inputs and the folder."""
    case = next(c for c in cases.CASES if c.name == name)
    reference = build_seeded(case.build_reference)
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(0))
    folder = tmp_path_factory.mktemp("qwen2_vl")
    reference.save_pretrained(folder)
    return reference, weights_convert.load_pretrained(folder), inputs, folder


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The image + video case."""
    return converted_case("image-and-video-mqa/loss", tmp_path_factory)


def test_conv3d_patch_embedding_is_one_linear():
    embed = PatchEmbedding3D(3, 2, 4, 10)
    torch.nn.init.normal_(embed.proj.weight)
    patches = torch.randn(7, 3 * 2 * 4 * 4)
    by_linear = patches @ embed.proj.weight.reshape(10, -1).T  # (7, 96) x (96, 10)
    torch.testing.assert_close(embed(patches), by_linear, rtol=1e-5, atol=1e-5)


def test_vision_positions_and_segments_equal_hf():
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids
    grid = torch.tensor([[1, 4, 6], [3, 2, 2], [2, 6, 2]])
    rows, cols = patch_positions(grid, 2)
    torch.testing.assert_close(torch.stack([rows, cols], -1), get_vision_position_ids(grid, 2))
    cu = get_vision_cu_seqlens(grid)
    seg = (torch.arange(int(cu[-1]))[:, None] >= cu[None, 1:]).sum(-1)  # segment id from HF's boundaries
    torch.testing.assert_close(block_diagonal_mask([24, 4, 4, 4, 12, 12])[0, 0], seg[:, None] == seg[None, :])


def test_vision_rope_equals_hf():
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLVisionRotaryEmbedding
    hf = Qwen2VLVisionRotaryEmbedding(transformers.Qwen2VLVisionConfig(embed_dim=64, num_heads=4))
    rows, cols = patch_positions(torch.tensor([[2, 4, 6]]), 2)
    cos, sin = vision_rope_2d(rows, cols, 16)
    ref_cos, ref_sin = hf(torch.zeros(1), torch.stack([rows, cols], -1))
    torch.testing.assert_close(cos, ref_cos)
    torch.testing.assert_close(sin, ref_sin)


def test_mrope_cos_sin_equal_hf():
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding
    params = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
    hf = Qwen2VLRotaryEmbedding(transformers.Qwen2VLTextConfig(hidden_size=64, num_attention_heads=4,
                                                               rope_parameters=params))
    positions = torch.randint(0, 50, (3, 2, 9))
    cos, sin = RotaryEmbedding(16, params, 32768)(positions)
    ref_cos, ref_sin = hf(torch.zeros(1), positions)
    torch.testing.assert_close(cos, ref_cos)
    torch.testing.assert_close(sin, ref_sin)
    # text: three equal positions are 1-D RoPE
    text = torch.arange(9).expand(2, -1)
    torch.testing.assert_close(mrope_cos_sin(text.expand(3, -1, -1), RotaryEmbedding(16, params, 1).inv_freq, [2, 3, 3]),
                               RotaryEmbedding(16, {"rope_type": "default", "rope_theta": 1e6}, 1)(text))


def test_rope_index_equals_hf(pair):
    reference, ours, inputs, _ = pair
    keys = ("input_ids", "mm_token_type_ids", "image_grid_thw", "video_grid_thw", "attention_mask")
    ref_pos, ref_delta = reference.model.get_rope_index(**{k: inputs[k] for k in keys})
    pos, delta = rope_index(inputs["mm_token_type_ids"], inputs["image_grid_thw"], inputs["video_grid_thw"],
                            inputs["attention_mask"], merge=2)
    torch.testing.assert_close(pos, ref_pos)
    torch.testing.assert_close(delta, ref_delta)
    # without mm_token_type_ids, ours reads the same types from the placeholder ids
    torch.testing.assert_close(ours.position_ids(inputs["input_ids"], inputs["attention_mask"], inputs["image_grid_thw"],
                                                 inputs["video_grid_thw"]), ref_pos)


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_packing_split_equals_block_diagonal_mask(pair, impl):
    _, ours, inputs, _ = pair
    grid = torch.cat([inputs["image_grid_thw"], inputs["video_grid_thw"]])
    pixels = torch.cat([inputs["pixel_values"], inputs["pixel_values_videos"]])
    set_attention_impl(impl)
    try:
        with torch.no_grad():
            ours.visual.config.packing = "split"
            split = ours.visual(pixels, grid, output_hidden_states=True)
            ours.visual.config.packing = "mask"
            masked = ours.visual(pixels, grid, output_hidden_states=True)
    finally:
        ours.visual.config.packing = "split"
        set_attention_impl("sdpa")
    torch.testing.assert_close(split.pooler_output, masked.pooler_output, rtol=1e-5, atol=1e-5)
    for a, b in zip(split.hidden_states, masked.hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # and the mask matters: attending across images changes the features
    ours.visual.config.packing = "mask"
    try:
        import minivlm.vision.packed_vit as vit
        real = vit.block_diagonal_mask
        vit.block_diagonal_mask = lambda lengths, device=None: None
        with torch.no_grad():
            leaky = ours.visual(pixels, grid).pooler_output
    finally:
        vit.block_diagonal_mask = real
        ours.visual.config.packing = "split"
    assert (leaky - split.pooler_output).abs().max() > 1e-3


def test_vision_tower_equals_hf(pair):
    reference, ours, inputs, _ = pair
    with torch.no_grad():
        ref = reference.model.visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"])
        mine = ours.visual(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    assert (mine.last_hidden_state - ref.last_hidden_state).abs().max() <= 1e-5
    assert (mine.pooler_output - ref.pooler_output).abs().max() <= 1e-5


def test_generate_without_cache_equals_cached(pair):
    _, ours, inputs, _ = pair
    inputs = {k: v for k, v in inputs.items() if k != "labels"}
    cached = ours.generate(**inputs, max_new_tokens=5)
    uncached = ours.generate(**inputs, max_new_tokens=5, use_cache=False)
    assert torch.equal(cached, uncached)


def test_hub_layout_and_config_load(pair, tmp_path):
    """Hub config.json (text fields at the top, rope_scaling {"type": "mrope"}) with the in-memory
    transformers 5 key names (model.visual.*, model.language_model.*)."""
    reference, _, inputs, folder = pair
    config = json.loads((folder / "config.json").read_text())
    text = config.pop("text_config")
    rope = text.pop("rope_parameters")
    hub = {**config, **{k: v for k, v in text.items() if k not in ("model_type", "layer_types")},
           "rope_theta": rope["rope_theta"], "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]}}
    (tmp_path / "config.json").write_text(json.dumps(hub))
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "model.safetensors")
    assert any(k.startswith("model.language_model.") for k in reference.state_dict())
    ours = weights_convert.load_pretrained(tmp_path)
    with torch.no_grad():
        mask = inputs["attention_mask"].bool()
        diff = (ours(**inputs).logits - reference(**inputs).logits)[mask].abs().max()
    assert diff <= 1e-5


def test_bad_inputs_name_both_numbers(pair):
    _, ours, inputs, _ = pair
    bad = dict(inputs, image_grid_thw=torch.tensor([[1, 4, 6], [1, 2, 4]]))  # 32 patches, 28 given... and more
    with pytest.raises(ValueError, match=r"describe 32 patches but pixel_values holds 28"):
        ours(**bad)
    short = dict(inputs, input_ids=inputs["input_ids"].masked_fill(inputs["input_ids"] == cases.IMAGE, 5))
    short["input_ids"][0, -1] = cases.IMAGE
    with pytest.raises(ValueError, match=r"hold 1 image token\(s\) .* give 7 feature\(s\)"):
        ours(**short)
    bad_video = dict(inputs, video_grid_thw=torch.tensor([[2, 2, 4], [1, 2, 4]]))  # 24 patches, 20 given
    with pytest.raises(ValueError, match=r"describe 24 patches but pixel_values_videos holds 20"):
        ours(**bad_video)
    with pytest.raises(ValueError, match=r"multiples of spatial_merge_size=2"):
        ours.visual(torch.zeros(3, 96), torch.tensor([[1, 1, 3]]))
    with pytest.raises(ValueError, match=r"\(patches, 96\)"):
        ours.visual(torch.zeros(4, 95), torch.tensor([[1, 2, 2]]))
    no_pixels = {k: v for k, v in inputs.items() if k not in ("pixel_values", "image_grid_thw")}
    with pytest.raises(ValueError, match=r"image token\(s\) .* no pixel_values"):
        ours(**no_pixels)


def test_real_widths_qwen2_vl_2b():
    """Qwen2-VL-2B's widths (tower 1280 x 16 heads, merger to 1536, decoder 1536 / 12 heads / 2 KV
    heads / 8960, mrope_section [16, 24, 24], theta 1e6, tied), depth cut to one layer each, an odd
    6 x 10 grid image: logits, loss and greedy ids against transformers. The vocabulary is cut from
    151936 to 32000 rows: the full table took 2 min and 4.3 GB here, and only its row count differs."""
    from minivlm.parity.harness import ParityCase, assert_parity
    vision = dict(depth=1, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    text = dict(vocab_size=32000, hidden_size=1536, intermediate_size=8960, num_hidden_layers=1, num_attention_heads=12,
                num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})

    def build():
        cfg = transformers.Qwen2VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=True,
                                         image_token_id=31999, video_token_id=31998, vision_start_token_id=31997,
                                         vision_end_token_id=31996)
        return transformers.Qwen2VLForConditionalGeneration(cfg)

    def make_inputs(reference, generator):
        n = 6 * 10 // 4
        start, pad, end = (reference.config.vision_start_token_id, reference.config.image_token_id,
                           reference.config.vision_end_token_id)
        words = torch.randint(0, 31000, (9,), generator=generator)
        ids = torch.cat([words[:4], torch.tensor([start] + [pad] * n + [end]), words[4:]])[None]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids,
                "mm_token_type_ids": (ids == pad).long(), "image_grid_thw": torch.tensor([[1, 6, 10]]),
                "pixel_values": torch.randn(60, 3 * 2 * 14 * 14, generator=generator)}

    assert_parity(ParityCase("qwen2_vl", "real-widths-2b", build, make_inputs, ("logits", "loss"),
                             generate=dict(max_new_tokens=3),
                             generate_inputs=lambda inputs: {k: v for k, v in inputs.items() if k != "labels"}))


def test_window_order_equals_hf():
    """Qwen2.5-VL's windows: the merge units' order and the window lengths of HF's get_vision_window_index."""
    from transformers.vision_utils import get_vision_window_index
    from minivlm.vision.packed import window_order
    grid = torch.tensor([[1, 6, 10], [3, 4, 4], [2, 14, 6]])
    for window_px in (16, 24, 112):
        order, lengths = window_order(grid, 2, window_px // 4 // 2)
        ref_order, ref_cu = get_vision_window_index(grid, spatial_merge_size=2, window_size=window_px, patch_size=4)
        torch.testing.assert_close(order, ref_order)
        assert lengths == torch.diff(ref_cu).tolist()


@pytest.fixture(scope="module")
def pair_2_5(tmp_path_factory):
    """Qwen2.5-VL's video (seconds given) + image case."""
    return converted_case("2.5-video-seconds-and-image/loss", tmp_path_factory)[:3]


def test_qwen2_5_windows_split_equals_mask_and_matter(pair_2_5):
    reference, ours, inputs = pair_2_5
    pixels, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
    with torch.no_grad():
        split = ours.visual(pixels, grid).pooler_output
        ours.visual.config.packing = "mask"
        masked = ours.visual(pixels, grid).pooler_output
        ours.visual.config.packing, window = "split", ours.visual.config.window_size
        ours.visual.config.window_size = None  # every layer full: not Qwen2.5-VL any more
        unwindowed = ours.visual(pixels, grid).pooler_output
        ours.visual.config.window_size = window
        ref = reference.model.visual(pixels, grid_thw=grid).pooler_output
    torch.testing.assert_close(split, masked, rtol=1e-5, atol=1e-5)
    assert (split - ref).abs().max() <= 1e-5
    assert (unwindowed - ref).abs().max() > 1e-3


def test_qwen2_5_time_positions_equal_hf(pair_2_5):
    reference, ours, inputs = pair_2_5
    keys = ("input_ids", "mm_token_type_ids", "image_grid_thw", "video_grid_thw", "attention_mask", "second_per_grid_ts")
    ref_pos = reference.model.get_rope_index(**{k: inputs[k] for k in keys})[0]
    pos = ours.position_ids(inputs["input_ids"], inputs["attention_mask"], inputs["image_grid_thw"],
                            inputs["video_grid_thw"], inputs["mm_token_type_ids"], inputs["second_per_grid_ts"])
    torch.testing.assert_close(pos, ref_pos)
    # row 1's video: 2 slices, 1.5 s each x tokens_per_second 2 -> time positions 3 apart
    times = pos[0, 1][inputs["input_ids"][1] == cases.VIDEO].unique()
    assert (times - times[0]).tolist() == [0, 3]
