"""Parity at real checkpoints' widths, with the depth cut to one or two layers so that CI's 2 cores
and 24 GB hold the reference and ours together (< ~3 GB each here).

Tiny widths hide what real ones show: head_dim 128, 577 positions (CLIP-L/14 at 336 px), 729 (SigLIP
so400m at 384 px), a 32064-token vocabulary (LLaVA's padded one), Mistral-7B's 8 KV heads for 32 and its
4096-token window, a projector from 1024 to 4096, 868 image tokens of a 4-tile anyres image. Each
reference is HF's class built from the checkpoint's config (layers cut), seeded, saved with
save_pretrained and loaded through load_pretrained in fp32 — the path a downloaded checkpoint takes —
and every listed output is compared within DESIGN.md's fp32 budget. Widths are those of the config.json
of the hub checkpoint named in each case.
"""
import pytest
import torch

from minivlm.parity import assert_parity
from minivlm.parity.blip import caption_inputs
from minivlm.parity.clip import model_inputs as clip_inputs
from minivlm.parity.harness import ParityCase
from minivlm.parity.llama import real_positions, text_inputs_with_labels
from minivlm.parity.llava import llava_batch, labels_for
from minivlm.parity.llava_next import llava_next_batch
from minivlm.parity.siglip import _inputs as siglip_inputs
from minivlm.parity.vit import pixel_inputs

# CLIP ViT-L/14 at 336 px (openai/clip-vit-large-patch14-336; LLaVA's tower), cut to 2 layers.
CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=2,
                  image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
# The 7B Llama of llava-1.5-7b / llava-v1.6-vicuna-7b (Vicuna): head_dim 128, the vocabulary padded to 32064.
LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                num_hidden_layers=1, vocab_size=32064, rms_norm_eps=1e-5, max_position_embeddings=4096,
                pad_token_id=0)
# Mistral-7B-Instruct-v0.2 as llava-hf/llava-v1.6-mistral-7b-hf's text_config stores it (the widths it leaves
# out are MistralConfig's defaults, test_mistral_qwen2.py checks that): 8 KV heads for 32 query heads
# (GQA 4:1), head_dim 128, rope_theta 1e6, no sliding window (null there), LLaVA's padded 32064 vocabulary.
MISTRAL_7B_V02 = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                      head_dim=128, num_hidden_layers=1, vocab_size=32064, rms_norm_eps=1e-5, rope_theta=1e6,
                      sliding_window=None, max_position_embeddings=32768)
# mistralai/Mistral-7B-v0.1: the same widths with a 4096-token sliding window, rope_theta 1e4, vocab 32000.
MISTRAL_7B_V01 = dict(MISTRAL_7B_V02, vocab_size=32000, rope_theta=1e4, sliding_window=4096)


@pytest.fixture(autouse=True, scope="module")
def _both_cores():
    """Real widths are matmul-bound: here the second core helps (the suite's default is one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def perturb_vectors(model, std=0.05):
    """HF initialises norms to 1 and biases to 0, where a swapped norm would go unseen: noise on every
    vector (cheap at these sizes, unlike noise on every matrix)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() <= 1:
                p.add_(torch.randn_like(p) * std)
    return model


def hf_model(cls_name, config):
    """HF's class, initialised once by HF's own init (its _init_weights), without torch's default
    init first (which HF overwrites: half the build time at these sizes, measured), vectors perturbed."""
    import transformers
    from transformers.initialization import no_init_weights
    with no_init_weights():
        model = getattr(transformers, cls_name)(config)
    model.init_weights()
    assert all(torch.isfinite(p).all() for p in model.parameters()), f"{cls_name}: a weight HF's init left empty"
    return perturb_vectors(model)


def build(cls_name, config_cls, **config):
    def make():
        import transformers
        return hf_model(cls_name, getattr(transformers, config_cls)(**config))
    return make


def vit_b16():  # google/vit-base-patch16-224 with 2 layers: 197 positions, 1000 classes
    return ParityCase("vit", "vit-b16-224 (2 layers)",
                      build("ViTForImageClassification", "ViTConfig", hidden_size=768, intermediate_size=3072,
                            num_attention_heads=12, num_hidden_layers=2, image_size=224, patch_size=16,
                            num_labels=1000),
                      lambda r, g: pixel_inputs(r, g, batch=2), ("logits",))


def clip_l_336():  # openai/clip-vit-large-patch14-336, 2 + 2 layers
    def make():
        import transformers
        vision = {k: v for k, v in CLIP_L_336.items() if k != "projection_dim"}
        text = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=2,
                    vocab_size=49408, max_position_embeddings=77, eos_token_id=2)
        return hf_model("CLIPModel", transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                             projection_dim=768))
    return ParityCase("clip", "clip-vit-l14-336 (2+2 layers)", make, clip_inputs(lengths=(77, 12), seq_len=77),
                      ("logits_per_image", "text_embeds", "image_embeds"))


def siglip_so400m():  # google/siglip-so400m-patch14-384, 2 + 2 layers: 729 positions, head_dim 72
    def make():
        import transformers
        common = dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=2)
        model = hf_model("SiglipModel", transformers.SiglipConfig(
            text_config=dict(common, vocab_size=32000, max_position_embeddings=64, projection_size=1152,
                             pad_token_id=1, eos_token_id=1, bos_token_id=0),  # the ids of its config.json
            vision_config=dict(common, image_size=384, patch_size=14)))
        with torch.no_grad():  # HF's init leaves both at 0
            model.logit_scale.fill_(4.7)
            model.logit_bias.fill_(-16.5)
        return model
    return ParityCase("siglip", "siglip-so400m-384 (2+2 layers)", make,
                      siglip_inputs(lengths=(64, 9), seq_len=64),
                      ("logits_per_image", "text_embeds", "image_embeds"))


def blip_base():  # Salesforce/blip-image-captioning-base, 2 + 2 layers: 577 positions, BERT vocab 30524
    def make():
        import transformers
        return hf_model("BlipForConditionalGeneration", transformers.BlipConfig(
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=2,
                               image_size=384, patch_size=16),
            text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=2,
                             vocab_size=30524)))
    return ParityCase("blip", "blip-base-384 (2+2 layers)", make, caption_inputs(lengths=(12, 7)),
                      ("logits", "loss", "image_embeds"))


def llama_7b():  # Llama-2-7b / Vicuna widths, 1 layer; greedy ids too
    return ParityCase("llama", "llama-7b widths (1 layer)", build("LlamaForCausalLM", "LlamaConfig", **LLAMA_7B),
                      text_inputs_with_labels, ("logits", "loss"), valid_positions=real_positions)


def llava_15_7b():  # llava-hf/llava-1.5-7b-hf: CLIP-L/336 (2 layers: feature layer -2) + 7B Llama (1 layer)
    def make():
        import transformers
        vision = {k: v for k, v in CLIP_L_336.items() if k != "projection_dim"}
        return hf_model("LlavaForConditionalGeneration", transformers.LlavaConfig(
            vision_config=transformers.CLIPVisionConfig(**vision), text_config=transformers.LlamaConfig(**LLAMA_7B),
            image_token_index=32000, image_seq_length=576))

    def inputs(reference, generator):
        batch = llava_batch(reference.config, generator, (1,), text_lengths=(9,))
        return {**batch, "labels": labels_for(batch, reference.config.image_token_index)}
    return ParityCase("llava", "llava-1.5-7b widths (2 + 1 layers)", make, inputs,
                      ("logits", "loss", "image_hidden_states"), valid_positions=real_positions)


def llava_next_7b(name, text_config_class, text):
    """A LLaVA-NeXT 7B checkpoint's widths: CLIP-L/336 (2 layers) + its text model (1 layer), anyres on a
    60 x 900 image (4 tiles); the pinpoints and image token of llava-v1.6's config.json."""
    def make():
        import transformers
        vision = {k: v for k, v in CLIP_L_336.items() if k != "projection_dim"}
        return hf_model("LlavaNextForConditionalGeneration", transformers.LlavaNextConfig(
            vision_config=transformers.CLIPVisionConfig(**vision),
            text_config=getattr(transformers, text_config_class)(**text),
            image_token_index=32000, image_seq_length=576,
            image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]))

    def inputs(reference, generator):
        # The logits of the last 32 positions (the text after the image reads every image token):
        # all 880 positions would triple the cost in the 32064-wide head.
        return {**llava_next_batch(reference.config, generator, [[(60, 900)]], text_lengths=(12,)),
                "logits_to_keep": 32}
    return ParityCase("llava_next", f"{name} widths (2 + 1 layers)", make, inputs, ("logits", "image_hidden_states"))


def llava_16_7b():  # llava-hf/llava-v1.6-vicuna-7b-hf
    return llava_next_7b("llava-v1.6-vicuna-7b", "LlamaConfig", LLAMA_7B)


def llava_16_mistral_7b():  # llava-hf/llava-v1.6-mistral-7b-hf: GQA 4:1, intermediate 14336, rope_theta 1e6
    return llava_next_7b("llava-v1.6-mistral-7b", "MistralConfig", MISTRAL_7B_V02)


def mistral_7b():
    """Mistral-7B-v0.1's widths, 1 layer, with its real 4096-token window: a 13-token prompt stays inside
    it, so this checks the widths (GQA 4:1 at head_dim 128, the 14336 MLP) and that a real-sized window
    is read right, not the window's masking — the tiny cases of parity/mistral.py cross their windows in
    the prefill, the KV cache and decoding."""
    return ParityCase("mistral", "mistral-7b-v0.1 widths (1 layer)",
                      build("MistralForCausalLM", "MistralConfig", **MISTRAL_7B_V01),
                      text_inputs_with_labels, ("logits", "loss"), valid_positions=real_positions)


@pytest.mark.parametrize("make_case", [vit_b16, clip_l_336, siglip_so400m, blip_base, llama_7b, llava_15_7b,
                                       llava_16_7b, llava_16_mistral_7b, mistral_7b], ids=lambda f: f.__name__)
def test_parity_at_real_widths(make_case):
    assert_parity(make_case())
