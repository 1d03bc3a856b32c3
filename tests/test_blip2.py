"""BLIP-2 / InstructBLIP beyond the parity cases (which run in test_parity.py): the image-token count
refused per row where transformers accepts it, the Q-Former's stage-1 masks by hand, Blip2Model's
getters, the KV cache after the soft prompt, and bad input."""
import json
import tempfile

import pytest
import torch

import weights_convert
from minivlm.parity import FP32_TOLERANCE
from minivlm.parity.blip2 import CASES, caption_inputs
from minivlm.parity.harness import build_seeded, convert_reference
from minivlm.text.qformer import stage1_mask


def _pair(name):
    case = next(c for c in CASES if c.name == name)
    reference = build_seeded(case.build_reference)
    ours = convert_reference(reference)
    return ours, reference, case


@pytest.fixture(scope="module")
def opt_pair():
    return _pair("blip2-opt-freq2/loss")


@torch.no_grad()
def test_wrong_image_token_count_refused_where_hf_accepts(opt_pair):
    """One row with Q + 1 image tokens and one with Q - 1: the batch total is right, so HF's masked_scatter
    fills them without a word (the second image's first query lands in row 0). Ours names the row and counts."""
    ours, reference, case = opt_pair
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(0))
    ids, Q, image_token = inputs["input_ids"].clone(), reference.config.num_query_tokens, reference.config.image_token_index
    first = (ids[0] == image_token).nonzero()[0].item()
    ids[0, first - 1] = image_token          # row 0: Q + 1 (a padded position turned image token)
    ids[1, (ids[1] == image_token).nonzero()[-1].item()] = 5  # row 1: Q - 1
    bad = {**inputs, "input_ids": ids}
    reference(**bad)  # no error in transformers 5.23
    with pytest.raises(ValueError, match=rf"row 0 of input_ids holds {Q + 1} image token\(s\) .* gives {Q} query"):
        ours(**bad)


def test_stage1_masks_by_hand():
    """Q = 2 queries, 3 text tokens of which the last is padding (Li et al. 2023, Fig. 2)."""
    text_mask = torch.tensor([[1, 1, 0]])
    q, t, p = 1, 1, 0  # readability: 1 = may see
    itc = [[q, q, 0, 0, 0], [q, q, 0, 0, 0], [0, 0, t, t, p], [0, 0, t, t, p], [0, 0, t, t, p]]
    itm = [[1, 1, 1, 1, 0]] * 5
    itg = [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]
    for kind, expected in (("itc", itc), ("itm", itm), ("itg", itg)):
        got = stage1_mask(2, text_mask, kind)
        assert got.shape == (1, 1, 5, 5)
        assert got[0, 0].int().tolist() == expected, kind
    with pytest.raises(ValueError, match="'itc', 'itm' or 'itg'"):
        stage1_mask(2, text_mask, "causal")


@torch.no_grad()
def test_blip2_model_getters():
    ours, reference, case = _pair("blip2-model-opt/loss")
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(1))
    pixels, ids, mask = inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
    image = ours.get_image_features(pixels)
    ref_image = reference.get_image_features(pixel_values=pixels)
    for field in ("last_hidden_state", "pooler_output"):
        assert (image[field] - ref_image[field]).abs().max() <= FP32_TOLERANCE
    assert (ours.get_qformer_features(pixels) - reference.get_qformer_features(pixel_values=pixels)).abs().max() \
        <= FP32_TOLERANCE
    text_ids = ids.masked_fill(ids == reference.config.image_token_index, 5)
    a = ours.get_text_features(text_ids, mask).last_hidden_state
    b = reference.get_text_features(input_ids=text_ids, attention_mask=mask).last_hidden_state
    assert (a - b)[mask.bool()].abs().max() <= FP32_TOLERANCE


@torch.no_grad()
def test_cache_after_soft_prompt_equals_one_pass(opt_pair):
    """Prefill on image + prompt, then the rest of the ids through the cache: the logits of one pass."""
    ours, reference, case = opt_pair
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(2))
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    full = ours(**inputs).logits
    cut = ids.shape[1] - 3
    first = ours(pixel_values=inputs["pixel_values"], input_ids=ids[:, :cut], attention_mask=mask[:, :cut],
                 use_cache=True)
    rest = ours(input_ids=ids[:, cut:], attention_mask=mask, past_key_values=first.past_key_values, use_cache=True)
    pieces = torch.cat([first.logits, rest.logits], dim=1)
    assert (pieces - full)[mask.bool()].abs().max() <= 1e-5


@torch.no_grad()
def test_instructblip_reads_the_instruction():
    """Another instruction changes the queries and so the logits (the Q-Former sees the text)."""
    ours, reference, case = _pair("instructblip-llama-freq2/loss")
    inputs = caption_inputs(reference, torch.Generator().manual_seed(3))
    other = {**inputs, "qformer_input_ids": (inputs["qformer_input_ids"] * 7 + 3) % 50}
    assert (ours(**inputs).logits - ours(**other).logits).abs().max() > 1e-3
    b = reference(**other).logits
    assert (ours(**other).logits - b)[inputs["attention_mask"].bool()].abs().max() <= FP32_TOLERANCE
    with pytest.raises(ValueError, match="InstructBLIP needs qformer_input_ids"):
        ours(**{k: v for k, v in inputs.items() if not k.startswith("qformer")})


def test_bad_input_errors(opt_pair):
    ours, reference, case = opt_pair
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(4))
    with pytest.raises(ValueError, match="needs pixel_values"):
        ours(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    with pytest.raises(ValueError, match="2 images but 3 rows"):
        ours(**{**inputs, "pixel_values": inputs["pixel_values"][:2]})
    with pytest.raises(ValueError, match="takes no \\['qformer_input_ids'\\]"):
        ours(**inputs, qformer_input_ids=inputs["input_ids"])


def _save_with_config(reference, folder, edit):
    reference.save_pretrained(folder)
    path = f"{folder}/config.json"
    config = json.load(open(path))
    edit(config)
    json.dump(config, open(path, "w"))


def test_flan_t5_refused_naming_the_model_type(opt_pair):
    _, reference, _ = opt_pair
    with tempfile.TemporaryDirectory() as folder:
        _save_with_config(reference, folder, lambda c: c["text_config"].update(model_type="t5"))
        with pytest.raises(ValueError, match="of type 't5' is not supported.*Flan-T5"):
            weights_convert.load_pretrained(folder)


def test_config_without_image_token_refused(opt_pair):
    _, reference, case = opt_pair
    with tempfile.TemporaryDirectory() as folder:
        _save_with_config(reference, folder, lambda c: c.pop("image_token_index", None) or c.pop("image_token_id", None))
        ours = weights_convert.load_pretrained(folder)
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="no image_token_index"):
        ours(**inputs)


def test_image_processor_equal_hf(tmp_path):
    """BLIP-2 ships BLIP's image processor with CLIP's mean/std at 224 (the hub's preprocessor_config.json)."""
    import matplotlib.cbook
    import numpy as np
    import transformers
    from PIL import Image
    config = {"image_processor_type": "BlipImageProcessor", "processor_class": "Blip2Processor", "do_resize": True,
              "size": {"height": 224, "width": 224}, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
              "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
              "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    hf = transformers.BlipImageProcessorPil.from_pretrained(tmp_path)
    ours = weights_convert.load_image_processor(tmp_path)
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 91, 3), dtype=np.uint8))
    for images in ([photo], [noise.convert("RGBA"), photo.convert("L")]):
        expected = hf(images, return_tensors="pt")["pixel_values"]
        got = ours(images)["pixel_values"]
        assert got.shape == expected.shape == (len(images), 3, 224, 224)
        assert (got - expected).abs().max() <= 1 / 255 / min(config["image_std"])
        assert (got - expected).abs().mean() <= 1e-3


def test_real_widths_blip2_opt():
    """Salesforce/blip2-opt widths (ViT-g: 1408 wide, 16 heads, 224 px in 14 px patches = 257 tokens; the
    Q-Former 768 wide with 32 queries; OPT-125m's 768 / 12 heads and 50272-token vocabulary), depth cut."""
    from minivlm.parity.blip2 import _builder, caption_inputs_with_labels, real_positions
    from minivlm.parity.harness import ParityCase, assert_parity
    vision = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=1, num_attention_heads=16,
                  image_size=224, patch_size=14, initializer_range=0.02)
    qformer = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                   intermediate_size=3072, max_position_embeddings=512, cross_attention_frequency=2)
    opt = dict(model_type="opt", vocab_size=50272, hidden_size=768, ffn_dim=3072, num_hidden_layers=1,
               num_attention_heads=12, max_position_embeddings=2048, dropout=0.0, pad_token_id=1, bos_token_id=2,
               eos_token_id=2)
    case = ParityCase("blip2", "real-widths", _builder("Blip2ForConditionalGeneration", opt, 32, vision=vision,
                                                       qformer=qformer),
                      caption_inputs_with_labels, ("logits", "loss"), valid_positions=real_positions,
                      generate=dict(max_new_tokens=3),
                      generate_inputs=lambda inputs: {k: v for k, v in inputs.items() if k != "labels"})
    assert_parity(case)


@pytest.mark.parametrize("name", ["blip2-opt-freq1-odd-image/generate", "retrieval-freq2/itm"])
def test_manual_attention_kernel(name):
    """The by-hand attention path (scores, mask, softmax) through the ViT, the Q-Former and the LM."""
    from minivlm.blocks import set_attention_impl
    from minivlm.parity.harness import assert_parity
    set_attention_impl("manual")
    try:
        assert_parity(next(c for c in CASES if c.name == name))
    finally:
        set_attention_impl("sdpa")
