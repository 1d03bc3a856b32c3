"""BLIP parity cases: tiny BlipForConditionalGeneration / BlipForImageTextRetrieval /
BlipForQuestionAnswering references with odd image and patch sizes, vision and text of different
widths, padded text on either side, label smoothing, prompted and unprompted greedy captions and
greedy VQA answers (some rows reach [SEP] early, so the eos / pad handling is compared too)."""
import torch

from .harness import ParityCase

# Small vocabulary with BLIP's special tokens inside it: [PAD]=0, [CLS]=1, then [DEC] (bos), [SEP].
VOCAB, CLS, BOS, SEP, EOS = 64, 1, 61, 62, 63


@torch.no_grad()
def _spread(model, std=0.15):
    """Redraw every weight larger than HF's 0.02 init: at that scale a random decoder barely
    hears the image and greedy ids come out the same for every picture, which would test little."""
    for name, p in model.named_parameters():
        if "LayerNorm" in name or "layer_norm" in name or "layernorm" in name:
            p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
        else:
            p.normal_(0.0, std)


def _blip(cls, text=None, vision=None, sep_bias=0.0, **top):
    def build():
        import transformers
        tc = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=40, pad_token_id=0, bos_token_id=BOS, sep_token_id=SEP, eos_token_id=EOS,
                  label_smoothing=0.1)
        vc = dict(hidden_size=24, intermediate_size=30, num_hidden_layers=2, num_attention_heads=3,
                  image_size=21, patch_size=5, initializer_range=0.02)  # 21 // 5 = 4: the conv drops the last pixel row and column
        tc.update(text or {})
        vc.update(vision or {})
        model = getattr(transformers, cls)(transformers.BlipConfig(text_config=tc, vision_config=vc,
                                                                   image_text_hidden_size=20, **top))
        _spread(model)
        if sep_bias and hasattr(model, "text_decoder"):
            with torch.no_grad():  # make [SEP] likely enough that some rows finish early
                model.text_decoder.cls.predictions.bias[SEP] += sep_bias
        return model
    return build


def _text(generator, batch, length, lengths, left=False, first=CLS):
    """(B, L) ids [first w ... w SEP] padded to L with [PAD] (right, or left), and the mask."""
    ids = torch.randint(2, BOS, (batch, length), generator=generator)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for row, n in enumerate(lengths):
        span = slice(length - n, length) if left else slice(0, n)
        mask[row, span] = 1
        ids[row, span.start] = first
        ids[row, span.stop - 1] = SEP
    return ids.masked_fill(mask == 0, 0), mask


def _pixels(reference, generator, batch):
    s = reference.config.vision_config.image_size
    return torch.randn(batch, 3, s, s, generator=generator)


def caption_inputs(left=False, lengths=(7, 5, 3)):
    def make(reference, generator):
        ids, mask = _text(generator, len(lengths), max(lengths), lengths, left=left, first=BOS)
        return {"pixel_values": _pixels(reference, generator, len(lengths)), "input_ids": ids,
                "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    return make


def prompt(inputs):
    """Like a tokenized "a picture of": [CLS] a picture of [SEP], the same for every image."""
    batch = inputs["pixel_values"].shape[0]
    return {"pixel_values": inputs["pixel_values"], "input_ids": torch.tensor([[CLS, 11, 12, 13, SEP]] * batch)}


def padded_prompts(inputs):
    """Prompts of different lengths in one batch, right-padded as BERT's tokenizer pads, with their mask."""
    return {k: inputs[k] for k in ("pixel_values", "input_ids", "attention_mask")}


def no_prompt(inputs):
    return {"pixel_values": inputs["pixel_values"]}


def retrieval_inputs(use_itm_head, left=False, lengths=(6, 4, 2)):
    def make(reference, generator):
        ids, mask = _text(generator, len(lengths), max(lengths), lengths, left=left)
        return {"input_ids": ids, "pixel_values": _pixels(reference, generator, len(lengths)),
                "attention_mask": mask, "use_itm_head": use_itm_head}
    return make


def vqa_inputs(question_lengths=(6, 4), answer_lengths=(4, 3), decoder_ids=False):
    def make(reference, generator):
        batch = len(question_lengths)
        q, q_mask = _text(generator, batch, max(question_lengths), question_lengths)
        a, a_mask = _text(generator, batch, max(answer_lengths), answer_lengths, first=BOS)
        inputs = {"input_ids": q, "pixel_values": _pixels(reference, generator, batch), "attention_mask": q_mask,
                  "labels": a}  # HF's VQA labels are the decoder's input ids, padding included
        if decoder_ids:
            inputs.update(decoder_input_ids=a, decoder_attention_mask=a_mask)
        return inputs
    return make


def at_other_size(make, size=(31, 26)):
    """The same inputs with a non-square image of another size: position embeddings resized bicubically."""
    def make_resized(reference, generator):
        inputs = make(reference, generator)
        inputs["pixel_values"] = torch.randn(inputs["pixel_values"].shape[0], 3, *size, generator=generator)
        inputs["interpolate_pos_encoding"] = True
        return inputs
    return make_resized


def no_prompt_resized(inputs):
    return {"pixel_values": inputs["pixel_values"], "interpolate_pos_encoding": True}


def question(inputs):
    return {k: inputs[k] for k in ("input_ids", "pixel_values", "attention_mask")}


def real_tokens(inputs):
    return inputs["attention_mask"].bool()


CAPTION_FIELDS = ("logits", "loss", "image_embeds", "last_hidden_state")
WIDE = dict(hidden_size=40, intermediate_size=50, num_hidden_layers=1, num_attention_heads=5, image_size=23,
            patch_size=4, layer_norm_eps=1e-6)

CASES = [
    ParityCase("blip", "caption-right-pad-prompted", _blip("BlipForConditionalGeneration", sep_bias=2.0),
               caption_inputs(), CAPTION_FIELDS, generate=dict(max_new_tokens=8), generate_inputs=prompt),
    ParityCase("blip", "caption-wide-vision-unprompted",
               _blip("BlipForConditionalGeneration", vision=WIDE,
                     text=dict(hidden_size=24, num_attention_heads=2, num_hidden_layers=3, label_smoothing=0.0),
                     sep_bias=1.0),
               caption_inputs(), CAPTION_FIELDS, generate=dict(max_new_tokens=9), generate_inputs=no_prompt),
    # Left padding: the leading padded rows see no key at all, HF computes them from garbage.
    ParityCase("blip", "caption-left-pad-default-length", _blip("BlipForConditionalGeneration"),
               caption_inputs(left=True), ("logits", "image_embeds"), generate={}, generate_inputs=no_prompt,
               valid_positions=real_tokens),
    ParityCase("blip", "caption-padded-prompts", _blip("BlipForConditionalGeneration", sep_bias=1.0),
               caption_inputs(lengths=(6, 4, 5)), ("logits",), generate=dict(max_new_tokens=6),
               generate_inputs=padded_prompts),
    ParityCase("blip", "caption-interpolated-31x26", _blip("BlipForConditionalGeneration", sep_bias=1.0),
               at_other_size(caption_inputs()), ("logits", "loss", "image_embeds"), generate=dict(max_new_tokens=5),
               generate_inputs=no_prompt_resized),
    ParityCase("blip", "retrieval-itm", _blip("BlipForImageTextRetrieval"), retrieval_inputs(True),
               ("itm_score", "question_embeds", "last_hidden_state")),
    ParityCase("blip", "retrieval-itc-interpolated-31x26", _blip("BlipForImageTextRetrieval"),
               at_other_size(retrieval_inputs(False)), ("itm_score", "question_embeds", "last_hidden_state")),
    ParityCase("blip", "retrieval-itc-cosine", _blip("BlipForImageTextRetrieval"), retrieval_inputs(False),
               ("itm_score", "question_embeds", "last_hidden_state")),
    ParityCase("blip", "retrieval-itm-wide-left-pad",
               _blip("BlipForImageTextRetrieval", vision=WIDE, text=dict(hidden_size=48, num_attention_heads=6)),
               retrieval_inputs(True, left=True), ("itm_score", "question_embeds")),
    ParityCase("blip", "retrieval-itc-wide-left-pad",
               _blip("BlipForImageTextRetrieval", vision=WIDE, text=dict(hidden_size=48, num_attention_heads=6)),
               retrieval_inputs(False, left=True), ("itm_score", "question_embeds")),
    # The answer decoder cross-attends to question states through keys sized for the image:
    # HF's VQA works only with text width == vision width, as in the released checkpoints.
    ParityCase("blip", "vqa-labels-answer",
               _blip("BlipForQuestionAnswering", vision=dict(hidden_size=32, num_attention_heads=2), sep_bias=0.5),
               vqa_inputs(),
               ("loss", "image_embeds", "last_hidden_state"), generate=dict(max_new_tokens=7),
               generate_inputs=question),
    ParityCase("blip", "vqa-wide-decoder-mask",
               _blip("BlipForQuestionAnswering", vision=WIDE, text=dict(hidden_size=40, num_attention_heads=4),
                     sep_bias=3.0),
               vqa_inputs((3, 7, 5), (5, 2, 4), decoder_ids=True), ("loss", "image_embeds"),
               generate=dict(max_new_tokens=6), generate_inputs=question),
]
