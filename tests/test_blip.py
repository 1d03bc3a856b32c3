"""BLIP beyond the parity cases: the vision tower's double norm vs HF, the three text modes and
their masks, cached vs uncached decoding, parameter sharing, the losses and the hard-negative
sampler by hand, strict loading of older file layouts, and clear errors on bad input."""
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import weights_convert
from minivlm.losses.blip import itc_loss, itm_loss, lm_loss, sample_hard_negatives
from minivlm.blocks import set_attention_impl
from minivlm.models.blip import (BlipConfig, BlipForConditionalGeneration, BlipForQuestionAnswering,
                                 BlipForImageTextRetrieval, blip_vision_config)
from minivlm.parity.blip import BOS, CASES, CLS, SEP
from minivlm.parity.harness import build_seeded
from minivlm.text.bert import BertConfig, BertTextModel, share_encoder_decoder
from minivlm.vision import VisionTransformer
from weights_convert.checkpoint import StoredTensor
from weights_convert.engine import convert
from weights_convert.families.blip import VISION


def case(name):
    return next(c for c in CASES if c.name == name)


def tiny_config(text_width=32, vision_width=32, **text):
    vision = blip_vision_config(image_size=20, patch_size=5, hidden_size=vision_width, num_layers=1, num_heads=2,
                                intermediate_size=40)
    text = BertConfig(**{**dict(vocab_size=64, hidden_size=text_width, num_layers=2, num_heads=4, intermediate_size=40,
                                max_position_embeddings=16, encoder_hidden_size=vision_width, bos_token_id=BOS,
                                sep_token_id=SEP), **text})
    return BlipConfig(vision=vision, text=text, image_text_hidden_size=12)


@pytest.fixture
def caption_model():
    torch.manual_seed(0)
    return BlipForConditionalGeneration(tiny_config()).eval()


# The vision tower -------------------------------------------------------------------------------

@torch.no_grad()
def test_vision_tower_pooler_is_double_normed_like_hf():
    """HF's BlipVisionModel applies post_layernorm to the sequence and again to the pooled [CLS]:
    final_norm='both' must give its pooler_output (which no parity case exposes)."""
    import transformers
    torch.manual_seed(0)
    hf_cfg = transformers.BlipVisionConfig(hidden_size=24, intermediate_size=30, num_hidden_layers=2,
                                           num_attention_heads=3, image_size=21, patch_size=5, initializer_range=0.02)
    reference = transformers.BlipVisionModel(hf_cfg).eval()
    with torch.no_grad():  # a LayerNorm with non-trivial weights, so normalising twice differs from once
        reference.post_layernorm.weight.normal_(1.0, 0.3)
        reference.post_layernorm.bias.normal_(0.0, 0.3)
    from weights_convert.families.blip import vision_config
    holder = nn.Module()
    holder.vision_model = VisionTransformer(vision_config(hf_cfg.to_dict()))
    stored = {"vision_model." + k: StoredTensor(v, "memory") for k, v in reference.state_dict().items()}
    holder.load_state_dict(convert(stored, VISION, holder.state_dict()))
    pixels = torch.randn(2, 3, 21, 21)
    ours, ref = holder.vision_model(pixels), reference(pixel_values=pixels)
    torch.testing.assert_close(ours.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pooler_output, ref.pooler_output, atol=1e-5, rtol=0)
    once = F.layer_norm(ref.last_hidden_state[:, 0], (24,), reference.post_layernorm.weight,
                        reference.post_layernorm.bias, 1e-5)
    assert not torch.allclose(ours.pooler_output, ref.last_hidden_state[:, 0], atol=1e-3)
    torch.testing.assert_close(ours.pooler_output, once, atol=1e-5, rtol=0)


# The three text modes ---------------------------------------------------------------------------

@torch.no_grad()
def test_text_modes_masks():
    """Decoder: position t never sees t+1..; encoders: every position sees all; unimodal: no image."""
    torch.manual_seed(0)
    text = BertTextModel(tiny_config().text).eval()
    ids = torch.randint(2, 60, (1, 6))
    changed = ids.clone()
    changed[0, 4] = (ids[0, 4] + 1) % 60 + 2
    image = torch.randn(1, 5, 32)
    dec = lambda x: text(x, encoder_hidden_states=image, is_decoder=True).last_hidden_state  # noqa: E731
    enc = lambda x: text(x, encoder_hidden_states=image).last_hidden_state  # noqa: E731
    torch.testing.assert_close(dec(ids)[:, :4], dec(changed)[:, :4])          # causal: the past is unaffected
    assert not torch.allclose(dec(ids)[:, 4:], dec(changed)[:, 4:])
    assert not torch.allclose(enc(ids)[:, :4], enc(changed)[:, :4], atol=1e-4)  # bidirectional
    # Image-grounded modes hear the image; the unimodal mode is the same weights without it.
    assert not torch.allclose(enc(ids), text(ids, encoder_hidden_states=torch.randn(1, 5, 32)).last_hidden_state)
    uni = text(ids).last_hidden_state
    torch.testing.assert_close(uni, text(ids, attention_mask=torch.ones(1, 6, dtype=torch.long)).last_hidden_state)


@torch.no_grad()
def test_sdpa_and_manual_kernels_agree(caption_model):
    ids = torch.randint(2, 60, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    pixels = torch.randn(2, 3, 20, 20)
    fast = caption_model(pixels, ids, mask).logits
    set_attention_impl("manual")
    try:
        slow = caption_model(pixels, ids, mask).logits
    finally:
        set_attention_impl("sdpa")
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


@torch.no_grad()
def test_cached_decoding_equals_uncached(caption_model):
    pixels = torch.randn(3, 3, 20, 20)
    prompt = torch.tensor([[CLS, 11, 12, SEP]] * 3)
    for kwargs in [{}, {"input_ids": prompt}]:
        fast = caption_model.generate(pixels, max_new_tokens=6, **kwargs)
        slow = caption_model.generate(pixels, max_new_tokens=6, use_cache=False, **kwargs)
        assert torch.equal(fast, slow)
    torch.manual_seed(1)
    vqa = BlipForQuestionAnswering(tiny_config()).eval()
    question = torch.randint(2, 60, (3, 5))
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0]])
    assert torch.equal(vqa.generate(question, pixels, mask, max_new_tokens=5),
                       vqa.generate(question, pixels, mask, max_new_tokens=5, use_cache=False))


def test_prompt_is_not_modified(caption_model):
    """HF writes [DEC] into the caller's input_ids; we work on a copy."""
    prompt = torch.tensor([[CLS, 11, 12, SEP]])
    out = caption_model.generate(torch.randn(1, 3, 20, 20), input_ids=prompt, max_new_tokens=2)
    assert prompt[0, 0] == CLS and out[0, 0] == BOS and torch.equal(out[0, 1:3], prompt[0, 1:3])


def test_encoder_decoder_sharing():
    torch.manual_seed(0)
    cfg = tiny_config().text
    encoder, decoder = BertTextModel(cfg), BertTextModel(cfg, lm_head=True)
    alone = sum(p.numel() for p in encoder.parameters()) + sum(p.numel() for p in decoder.parameters())
    share_encoder_decoder(encoder, decoder)
    both = nn.ModuleList([encoder, decoder])
    shared = sum(p.numel() for p in both.parameters())  # parameters() counts a shared tensor once
    self_attn = sum(p.numel() for layer in decoder.layers for p in
                    list(layer.self_attn.parameters()) + list(layer.self_attn_norm.parameters()))
    head = sum(p.numel() for n, p in decoder.head.named_parameters() if n != "decoder.weight")
    assert shared == sum(p.numel() for p in encoder.parameters()) + self_attn + head < alone
    assert decoder.layers[0].mlp is encoder.layers[0].mlp
    assert decoder.layers[0].self_attn is not encoder.layers[0].self_attn
    assert decoder.head.decoder.weight is encoder.embeddings.word_embeddings.weight
    # Gradients from the decoder's LM loss reach the shared cross-attention.
    ids, image = torch.randint(2, 60, (2, 5)), torch.randn(2, 4, 32)
    logits = decoder(ids, encoder_hidden_states=image, is_decoder=True).logits
    lm_loss(logits, ids).backward()
    assert encoder.layers[0].cross_attn.q_proj.weight.grad is not None


# Losses and the hard-negative sampler, by hand --------------------------------------------------

def test_lm_loss_by_hand():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    labels[1, 3:] = -100
    eps, total, count = 0.1, 0.0, 0
    for b in range(2):
        for t in range(4):
            y = labels[b, t + 1].item()
            if y == -100:
                continue
            logp = logits[b, t].log_softmax(-1)
            total += -(1 - eps) * logp[y] - eps * logp.mean()  # smoothing spreads eps uniformly over V
            count += 1
    torch.testing.assert_close(lm_loss(logits, labels, 0.1), total / count)


def test_itc_and_itm_loss_by_hand():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(4, 6), dim=-1), F.normalize(torch.randn(4, 6), dim=-1)
    temp = 0.07
    sim = [[float(img[i] @ txt[j]) / temp for j in range(4)] for i in range(4)]
    i2t = sum(-torch.tensor(sim[i]).log_softmax(0)[i] for i in range(4)) / 4
    t2i = sum(-torch.tensor([sim[j][i] for j in range(4)]).log_softmax(0)[i] for i in range(4)) / 4
    torch.testing.assert_close(itc_loss(img, txt, temp), (i2t + t2i) / 2)
    logits, labels = torch.randn(6, 2), torch.tensor([1, 1, 0, 0, 1, 0])
    torch.testing.assert_close(itm_loss(logits, labels), -logits.log_softmax(-1)[range(6), labels].mean())


def test_hard_negatives_skip_the_diagonal_and_follow_similarity():
    sim = torch.tensor([[5.0, 1.0, 2.0, 0.0],
                        [0.5, 4.0, 0.5, 1.5],
                        [3.0, 0.0, 9.0, 0.0],
                        [1.0, 1.0, 1.0, 1.0]])
    # K copies of the 4 x 4 problem on the block diagonal (-inf elsewhere): K draws per call.
    K, generator = 250, torch.Generator().manual_seed(0)
    big = torch.full((4 * K, 4 * K), float("-inf"))
    for k in range(K):
        big[4 * k:4 * k + 4, 4 * k:4 * k + 4] = sim
    draws = torch.cat([sample_hard_negatives(big, generator).view(K, 4) for _ in range(16)])  # (T, 4)
    within = draws - 4 * torch.arange(K).repeat(16)[:, None]  # index inside its block
    assert ((within >= 0) & (within < 4)).all()
    assert not (within == torch.arange(4)).any(), "a true partner was drawn as a negative"
    for i in range(4):
        w = sim[i].exp()
        w[i] = 0
        expected = w / w.sum()  # softmax over the row, the diagonal removed, renormalised
        observed = torch.bincount(within[:, i], minlength=4).float() / len(within)
        torch.testing.assert_close(observed, expected, atol=0.03, rtol=0)  # ~4 sigma at 4000 draws
    with pytest.raises(ValueError, match="square"):
        sample_hard_negatives(torch.zeros(3, 4))


# Strict loading ---------------------------------------------------------------------------------

@torch.no_grad()
def test_older_layout_with_stored_decoder_weights_loads():
    """Older files store the tied LM projection (and its bias alias, and position_ids) explicitly."""
    from safetensors.torch import load_file, save_file
    c = case("caption-right-pad-prompted")
    reference = build_seeded(c.build_reference)
    inputs = c.make_inputs(reference, torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        path = Path(folder) / "model.safetensors"
        state = load_file(path)
        state["text_decoder.cls.predictions.decoder.weight"] = state["text_decoder.bert.embeddings.word_embeddings.weight"].clone()
        state["text_decoder.cls.predictions.decoder.bias"] = state["text_decoder.cls.predictions.bias"].clone()
        state["text_decoder.bert.embeddings.position_ids"] = torch.arange(40)[None]
        save_file(state, path)
        ours = weights_convert.load_pretrained(folder, dtype=torch.float32)
    torch.testing.assert_close(ours(**inputs).logits, reference(**inputs).logits, atol=1e-4, rtol=0)


def test_strict_loading_names_the_key():
    from safetensors.torch import load_file, save_file
    reference = build_seeded(case("retrieval-itm").build_reference)
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        path = Path(folder) / "model.safetensors"
        state = load_file(path)
        del state["text_encoder.encoder.layer.1.crossattention.self.key.weight"]
        save_file(state, path)
        with pytest.raises(weights_convert.MissingWeightsError, match=r"text_encoder\.layers\.1\.cross_attn\.k_proj"):
            weights_convert.load_pretrained(folder)
        state["text_encoder.encoder.layer.1.crossattention.self.key.weight"] = torch.zeros(32, 24)
        state["text_encoder.pooler.dense.weight"] = torch.zeros(32, 32)
        save_file(state, path)
        with pytest.raises(weights_convert.UnusedWeightsError, match=r"text_encoder\.pooler\.dense\.weight"):
            weights_convert.load_pretrained(folder)


# Bad input --------------------------------------------------------------------------------------

def test_bad_input_gives_clear_errors(caption_model):
    pixels, ids = torch.randn(2, 3, 20, 20), torch.randint(2, 60, (2, 5))
    with pytest.raises(ValueError, match=r"pixel_values must be a \(batch, 3, H, W\)"):
        caption_model(torch.randn(3, 20, 20), ids)
    with pytest.raises(ValueError, match="20x20"):
        caption_model(torch.randn(2, 3, 24, 24), ids)
    with pytest.raises(ValueError, match="needs input_ids"):
        caption_model(pixels)
    with pytest.raises(ValueError, match="2 images but 3 rows"):
        caption_model(pixels, torch.randint(2, 60, (3, 5)))
    with pytest.raises(ValueError, match="position table"):
        caption_model(pixels, torch.randint(2, 60, (2, 17)))
    with pytest.raises(ValueError, match="at least"):
        caption_model.generate(pixels, input_ids=torch.tensor([[CLS], [CLS]]))
    with pytest.raises(ValueError, match="labels must be"):
        caption_model(pixels, ids, labels=ids[:, :3])
    retrieval = BlipForImageTextRetrieval(tiny_config()).eval()
    with pytest.raises(ValueError, match="needs input_ids"):
        retrieval(pixel_values=pixels)
    with pytest.raises(ValueError, match="needs pixel_values"):
        retrieval(input_ids=ids)
    vqa = BlipForQuestionAnswering(tiny_config()).eval()
    with pytest.raises(ValueError, match="labels .* or decoder_input_ids"):
        vqa(ids, pixels)
    with pytest.raises(ValueError, match="text hidden_size == vision hidden_size"):
        BlipForQuestionAnswering(tiny_config(text_width=32, vision_width=24))
    with pytest.raises(ValueError, match="vision tower is 24 wide"):
        BlipConfig(vision=tiny_config(vision_width=24).vision, text=tiny_config().text)


# Pre-training objectives together -----------------------------------------------------------------

def test_pretraining_losses_fall_on_a_fixed_batch():
    from minivlm.models.blip_pretrain import BlipForPretraining
    torch.manual_seed(0)
    cfg = tiny_config(label_smoothing=0.1)
    model = BlipForPretraining(cfg, share_text=True, enc_token_id=BOS - 1)
    assert model.text_decoder.layers[1].cross_attn is model.text_encoder.layers[1].cross_attn
    pixels = torch.randn(4, 3, 20, 20)
    ids = torch.randint(2, 50, (4, 6))
    ids[:, 0] = CLS
    mask = torch.tensor([[1] * 6, [1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0]])
    generator = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model(pixels, ids, mask, generator=generator)
    assert first.itm_logits.shape == (12, 2) and first.itm_labels.tolist() == [1] * 4 + [0] * 8
    for _ in range(25):
        out = model(pixels, ids, mask, generator=generator)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    last = model(pixels, ids, mask, generator=generator)
    for name in ("loss_itc", "loss_itm", "loss_lm"):
        assert last[name] < first[name], f"{name}: {first[name]:.3f} -> {last[name]:.3f}"
