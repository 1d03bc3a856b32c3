"""BLIP-2 / InstructBLIP parity cases: tiny references over the Q-Former's and the prompt's corners.

Corners: cross_attention_frequency 1, 2 and 3 (which layers cross-attend), a left-padded batch of
prompts of different lengths with the image tokens after the padding (transformers 5's layout),
captions without a prompt (generate builds [image tokens, bos]), OPT with post-LN and an untied
head, a LLaMA language model (GQA), InstructBLIP's right-padded Q-Former instruction, retrieval's
ITM and ITC (several texts per image), Blip2Model.
"""
import torch

from .harness import ParityCase

# HF's vision initializer_range is 1e-10 (a tower meant to be loaded): at that scale every image gives
# the same features and a vision bug could not show, so the tiny towers are initialised at 0.2.
VISION = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, image_size=30,
              patch_size=6, initializer_range=0.2)
QFORMER = dict(vocab_size=50, hidden_size=24, num_hidden_layers=3, num_attention_heads=4, intermediate_size=36,
               max_position_embeddings=32, initializer_range=0.2)
OPT = dict(model_type="opt", vocab_size=71, hidden_size=48, ffn_dim=80, num_hidden_layers=2, num_attention_heads=4,
           max_position_embeddings=60, dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2, init_std=0.1)
LLAMA = dict(model_type="llama", vocab_size=67, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, initializer_range=0.1,
             pad_token_id=0, bos_token_id=1, eos_token_id=2)
PAD_LENGTHS = (7, 3, 5)  # text tokens after the image tokens and bos, per row


def _config(cls_name, text, num_query_tokens, vision=(), qformer=(), **top):
    import transformers
    config_cls = transformers.InstructBlipConfig if cls_name.startswith("InstructBlip") else transformers.Blip2Config
    return config_cls(vision_config={**VISION, **dict(vision)}, qformer_config={**QFORMER, **dict(qformer)},
                      text_config=text, num_query_tokens=num_query_tokens,
                      image_token_index=text["vocab_size"] - 1, **top)


def _builder(cls_name, text, num_query_tokens, **kwargs):
    def build():
        import transformers
        model = getattr(transformers, cls_name)(_config(cls_name, text, num_query_tokens, **kwargs))
        # HF initialises the queries to zeros; random ones make every query read the image differently.
        torch.nn.init.normal_(model.query_tokens, std=1.0)
        return model
    return build


def pixels(reference, generator, batch):
    size = reference.config.vision_config.image_size
    return torch.randn(batch, 3, size, size, generator=generator)


def prompt_batch(reference, generator, lengths=PAD_LENGTHS, pad=None, image_first=False):
    """Left-padded rows of [pad ...][image token x Q][bos][text ...], with their mask. image_first: the
    layout HF's Blip2Processor writes with left padding, the image tokens put before the padded text:
    [image token x Q][pad ...][bos][text ...]."""
    cfg = reference.config
    text, Q = cfg.text_config, cfg.num_query_tokens
    pad = text.pad_token_id if pad is None else pad
    longest = Q + 1 + max(lengths)
    ids = torch.full((len(lengths), longest), pad, dtype=torch.long)
    mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    for row, n in enumerate(lengths):
        words = torch.randint(3, text.vocab_size - 1, (n,), generator=generator)  # never the image token
        row_ids = torch.cat([torch.full((Q,), cfg.image_token_index), torch.tensor([text.bos_token_id]), words])
        ids[row, longest - len(row_ids):] = row_ids
        mask[row, longest - len(row_ids):] = 1
        if image_first:  # move the image tokens to the front of the row, the padding after them
            ids[row, :Q], ids[row, Q:longest - len(row_ids) + Q] = cfg.image_token_index, pad
            mask[row, :Q], mask[row, Q:longest - len(row_ids) + Q] = 1, 0
    return ids, mask


def qformer_instruction(generator, batch, vocab=QFORMER["vocab_size"], lengths=(6, 4, 2)):
    """A right-padded instruction for InstructBLIP's Q-Former (BERT style, pad id 0)."""
    ids = torch.zeros(batch, max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row in range(batch):
        n = lengths[row % len(lengths)]
        ids[row, :n] = torch.randint(1, vocab, (n,), generator=generator)
        mask[row, :n] = 1
    return ids, mask


def caption_inputs(reference, generator, image_first=False):
    ids, mask = prompt_batch(reference, generator, image_first=image_first)
    inputs = {"pixel_values": pixels(reference, generator, ids.shape[0]), "input_ids": ids, "attention_mask": mask}
    if type(reference).__name__.startswith("InstructBlip"):
        inputs["qformer_input_ids"], inputs["qformer_attention_mask"] = qformer_instruction(generator, ids.shape[0])
    return inputs


def caption_inputs_with_labels(reference, generator):
    inputs = caption_inputs(reference, generator)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    labels[labels == reference.config.image_token_index] = -100  # the soft prompt is not predicted
    return {**inputs, "labels": labels}


def unprompted(inputs):
    """generate(pixel_values) alone: HF builds [image tokens x Q, bos] for every row."""
    return {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}


def real_positions(inputs):
    return inputs["attention_mask"].bool()


def retrieval_inputs(itm, lengths=(5, 2, 4)):
    """Rows of [image token x Q][Q-Former text ...][pad 0 ...]: the text is BERT-tokenized for the
    Q-Former and padded on the right. ITM pairs image i with text i; ITC scores 2 images x 3 texts."""
    def make(reference, generator):
        Q, image_token = reference.config.num_query_tokens, reference.config.image_token_index
        ids = torch.zeros(len(lengths), Q + max(lengths), dtype=torch.long)
        mask = torch.zeros_like(ids)
        ids[:, :Q], mask[:, :Q] = image_token, 1
        for row, n in enumerate(lengths):
            ids[row, Q:Q + n] = torch.randint(1, QFORMER["vocab_size"], (n,), generator=generator)
            mask[row, Q:Q + n] = 1
        images = len(lengths) if itm else 2
        return {"pixel_values": pixels(reference, generator, images), "input_ids": ids, "attention_mask": mask,
                "use_image_text_matching_head": itm}
    return make


CAPTION = ("Blip2ForConditionalGeneration", "InstructBlipForConditionalGeneration")
CONFIGS = {
    # name: (class, language model, num_query_tokens, overrides)
    "blip2-opt-freq2": (CAPTION[0], OPT, 5, dict(qformer=dict(cross_attention_frequency=2))),
    "blip2-opt-freq1-odd-image": (CAPTION[0], OPT, 3, dict(qformer=dict(cross_attention_frequency=1),
                                                           vision=dict(image_size=28, patch_size=7))),
    "blip2-opt-postln-untied-no-qkv-bias-freq3": (
        CAPTION[0], {**OPT, "do_layer_norm_before": False, "tie_word_embeddings": False}, 4,
        dict(qformer=dict(cross_attention_frequency=3, num_hidden_layers=4), vision=dict(qkv_bias=False))),
    "blip2-llama-gqa": (CAPTION[0], LLAMA, 4, dict()),
    "instructblip-llama-freq2": (CAPTION[1], LLAMA, 4, dict(qformer=dict(cross_attention_frequency=2))),
    "instructblip-llama-freq1-tied": (CAPTION[1], {**LLAMA, "tie_word_embeddings": True}, 3,
                                      dict(qformer=dict(cross_attention_frequency=1))),
}

CASES = []
for _name, (_cls, _text, _q, _kw) in CONFIGS.items():
    _build = _builder(_cls, _text, _q, **_kw)
    CASES += [
        ParityCase("blip2", f"{_name}/loss", _build, caption_inputs_with_labels, ("logits", "loss"),
                   valid_positions=real_positions),
        ParityCase("blip2", f"{_name}/generate", _build, caption_inputs, ("logits",),
                   generate=dict(max_new_tokens=8), valid_positions=real_positions),
        ParityCase("blip2", f"{_name}/generate-unprompted", _build, caption_inputs, (),
                   generate=dict(max_new_tokens=8), generate_inputs=unprompted),
    ]
CASES.append(ParityCase("blip2", "blip2-opt-processor-layout/generate", _builder(CAPTION[0], OPT, 4),
                        lambda reference, generator: caption_inputs(reference, generator, image_first=True),
                        ("logits",), generate=dict(max_new_tokens=8), valid_positions=real_positions))
CASES.append(ParityCase("blip2", "blip2-model-opt/loss", _builder("Blip2Model", OPT, 4), caption_inputs_with_labels,
                        ("logits", "loss"), valid_positions=real_positions))
for _freq in (1, 2):
    _build = _builder("Blip2ForImageTextRetrieval", OPT, 4,
                      qformer=dict(cross_attention_frequency=_freq, use_qformer_text_input=True))
    CASES += [
        ParityCase("blip2", f"retrieval-freq{_freq}/itm", _build, retrieval_inputs(True),
                   ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds")),
        ParityCase("blip2", f"retrieval-freq{_freq}/itc", _build, retrieval_inputs(False),
                   ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds")),
    ]
