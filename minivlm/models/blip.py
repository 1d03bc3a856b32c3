"""BLIP (Li et al. 2022): one ViT and one BERT-style text transformer, composed three ways.

    BlipForConditionalGeneration   image -> ViT -> image-grounded decoder -> caption
    BlipForImageTextRetrieval      ITM: image-grounded encoder -> 2-way head;  ITC: cosine of projections
    BlipForQuestionAnswering       image -> ViT -> question through the image-grounded encoder
                                   -> answer decoder cross-attending to the question states

The vision tower is minivlm's VisionTransformer with BLIP's switches (BLIP_VISION below); the text
side is minivlm.text.bert.BertTextModel in its three modes. Inputs and output fields carry HF's names.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import generation
from ..blip_losses import lm_loss
from ..outputs import ModelOutput
from ..text.bert import BertConfig, BertTextModel
from ..vision import VisionConfig, VisionTransformer

# BLIP's tower is a pre-norm ViT with [CLS] and patch bias whose one final LayerNorm (HF's
# post_layernorm) is applied to the sequence and then once more to the pooled [CLS] token.
BLIP_VISION = dict(class_token=True, patch_bias=True, pre_norm=False, final_norm="both", pooler="cls")


def blip_vision_config(**kwargs):
    return VisionConfig(**{**dict(hidden_act="gelu", layer_norm_eps=1e-5), **kwargs, **BLIP_VISION})


@dataclass
class BlipConfig:
    vision: VisionConfig
    text: BertConfig
    image_text_hidden_size: int = 256   # width of the ITC projections

    def __post_init__(self):
        if self.text.encoder_hidden_size != self.vision.hidden_size:
            raise ValueError(f"the text cross-attends to {self.text.encoder_hidden_size}-wide states but the "
                             f"vision tower is {self.vision.hidden_size} wide")


def _decoder_output(logits, labels, image_embeds, label_smoothing, out):
    """HF's BLIP outputs: the (label-smoothed) LM loss when labels are given, and the image tower's
    last_hidden_state under both of its names."""
    if labels is not None:
        out.loss = lm_loss(logits, labels, label_smoothing)
    out.image_embeds = out.last_hidden_state = image_embeds  # (B, 1 + N, Dv)
    return out


def _check_ids(input_ids, batch, what):
    if input_ids is None:
        raise ValueError(f"{what} needs input_ids (batch, seq_len) of token ids, got None")
    if not torch.is_tensor(input_ids) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if torch.is_tensor(input_ids) else type(input_ids).__name__
        raise ValueError(f"{what}: input_ids must be a (batch, seq_len) tensor, got {shape}")
    if input_ids.shape[0] != batch:
        raise ValueError(f"{what}: {batch} images but {input_ids.shape[0]} rows of input_ids")


def _generation_mask(input_ids, attention_mask, pad_token_id, eos_token_id):
    """HF's generate infers the mask from pad tokens when none is given (and pad != eos)."""
    if attention_mask is not None:
        return attention_mask
    if pad_token_id is not None and pad_token_id != eos_token_id and (input_ids == pad_token_id).any():
        return (input_ids != pad_token_id).long()
    return None


def _max_new(max_new_tokens, max_length, prompt_len, max_positions):
    """New tokens to generate, counted as HF's generate counts them: max_new_tokens if given, else
    max_length (prompt included) if given, else 20 new tokens within the position table."""
    if max_new_tokens is None and max_length is None:
        n = min(20 + prompt_len, max_positions) - prompt_len
    else:
        n = generation.new_token_budget(prompt_len, max_new_tokens, max_length)
    if n < 1:
        raise ValueError(f"nothing to generate: max_new_tokens={max_new_tokens}, max_length={max_length}, "
                         f"prompt of {prompt_len} tokens")
    return n


class _DecoderStep:
    """Adapts the image-grounded decoder to minivlm.generation's model interface. The cross-attended
    states stay here; after the prefill the decoder reads their keys/values from its cache."""

    def __init__(self, decoder, context, context_mask=None):
        self.decoder, self.context, self.context_mask = decoder, context, context_mask

    def __call__(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True):
        cache = past_key_values if past_key_values is not None else (self.decoder.new_cache() if use_cache else None)
        context, context_mask = self.context, self.context_mask
        if cache is not None and len(cache) and input_ids.shape[0] != context.shape[0]:
            # beam search decodes K rows per image; the context's keys/values are in the (reordered)
            # cache already, so only its row count has to match
            context = context[:1].expand(input_ids.shape[0], -1, -1)
            context_mask = None if context_mask is None else context_mask[:1].expand(input_ids.shape[0], -1)
        out = self.decoder(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           encoder_hidden_states=context, encoder_attention_mask=context_mask,
                           is_decoder=True, cache=cache)
        out.past_key_values = cache
        return out


def decode(decoder, input_ids, attention_mask, context, context_mask, max_new_tokens, use_cache=True, **options):
    cfg = decoder.config
    attention_mask = _generation_mask(input_ids, attention_mask, cfg.pad_token_id, cfg.sep_token_id)
    # A caption or answer ends at [SEP]; finished rows are filled with [PAD] (HF passes the same ids).
    return generation.generate(_DecoderStep(decoder, context, context_mask), input_ids, attention_mask,
                               max_new_tokens=max_new_tokens, eos_token_id=cfg.sep_token_id,
                               pad_token_id=cfg.pad_token_id, use_cache=use_cache, **options)


class BlipBase(nn.Module):
    def __init__(self, cfg: BlipConfig):
        super().__init__()
        self.config = cfg
        self.vision_model = VisionTransformer(cfg.vision)

    def encode_image(self, pixel_values, interpolate_pos_encoding=False):
        """(B, 3, H, W) -> the tower's output; last_hidden_state (B, 1 + N, Dv) is what the text attends to."""
        return self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)


class BlipForConditionalGeneration(BlipBase):
    """Captioning: the image-grounded decoder, [DEC] (bos) first, cross-attending to every image token."""

    def __init__(self, cfg: BlipConfig):
        super().__init__(cfg)
        self.text_decoder = BertTextModel(cfg.text, lm_head=True)

    def forward(self, pixel_values, input_ids=None, attention_mask=None, labels=None, interpolate_pos_encoding=False):
        vision = self.encode_image(pixel_values, interpolate_pos_encoding)
        image_embeds = vision.last_hidden_state  # (B, 1 + N, Dv)
        _check_ids(input_ids, image_embeds.shape[0], "BlipForConditionalGeneration.forward")
        text = self.text_decoder(input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                                 is_decoder=True)
        return _decoder_output(text.logits, labels, image_embeds, self.config.text.label_smoothing,
                               ModelOutput(logits=text.logits))  # logits (B, L, V)

    @torch.no_grad()
    def generate(self, pixel_values, input_ids=None, attention_mask=None, max_new_tokens=None, max_length=None,
                 interpolate_pos_encoding=False, use_cache=True, **options):
        """Greedy caption, the same ids as HF's generate (options: HF's num_beams, repetition_penalty ...,
        minivlm/generation.py). A prompt ("a picture of") comes tokenized as
        [CLS] ... [SEP]: like HF we put [DEC] in place of [CLS] and drop the last token (the [SEP])
        so the decoder continues the prompt. Without a prompt the caption starts from [DEC] alone."""
        image_embeds = self.encode_image(pixel_values, interpolate_pos_encoding).last_hidden_state
        B, bos = image_embeds.shape[0], self.config.text.bos_token_id
        if input_ids is None:
            input_ids = torch.full((B, 1), bos, dtype=torch.long, device=image_embeds.device)
        else:
            _check_ids(input_ids, B, "BlipForConditionalGeneration.generate")
            if input_ids.shape[1] < 2:
                raise ValueError(f"a caption prompt must hold at least [CLS] and [SEP] (HF drops the last token), "
                                 f"got {input_ids.shape[1]} token(s)")
            input_ids = input_ids.clone()
            input_ids[:, 0] = bos
            input_ids = input_ids[:, :-1]
            attention_mask = attention_mask[:, :-1] if attention_mask is not None else None
        steps = _max_new(max_new_tokens, max_length, input_ids.shape[1], self.config.text.max_position_embeddings)
        return decode(self.text_decoder, input_ids, attention_mask, image_embeds, None, steps, use_cache, **options)


class BlipForImageTextRetrieval(BlipBase):
    """ITM head on the image-grounded encoder, or ITC cosine similarity of the unimodal features."""

    def __init__(self, cfg: BlipConfig):
        super().__init__(cfg)
        self.text_encoder = BertTextModel(cfg.text)
        self.vision_proj = nn.Linear(cfg.vision.hidden_size, cfg.image_text_hidden_size)
        self.text_proj = nn.Linear(cfg.text.hidden_size, cfg.image_text_hidden_size)
        self.itm_head = nn.Linear(cfg.text.hidden_size, 2)

    def image_text_features(self, image_embeds, text_embeds):
        """[CLS] states -> projected, L2-normalised ITC features (B, E) each."""
        return (F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1),
                F.normalize(self.text_proj(text_embeds[:, 0]), dim=-1))

    def forward(self, input_ids=None, pixel_values=None, use_itm_head=True, attention_mask=None,
                interpolate_pos_encoding=False):
        if pixel_values is None:
            raise ValueError("BlipForImageTextRetrieval needs pixel_values (batch, 3, H, W), got None")
        vision = self.encode_image(pixel_values, interpolate_pos_encoding)
        image_embeds = vision.last_hidden_state  # (B, 1 + N, Dv)
        _check_ids(input_ids, image_embeds.shape[0], "BlipForImageTextRetrieval")
        if use_itm_head:
            # Image-grounded encoder: bidirectional self-attention + cross-attention to the image.
            text = self.text_encoder(input_ids, attention_mask, encoder_hidden_states=image_embeds).last_hidden_state
            itm_score = self.itm_head(text[:, 0])  # (B, 2): [not matched, matched]
        else:
            # Unimodal encoder: the same weights with the cross-attention skipped.
            text = self.text_encoder(input_ids, attention_mask).last_hidden_state
            image_feat, text_feat = self.image_text_features(image_embeds, text)
            itm_score = image_feat @ text_feat.t()  # (B_images, B_texts) cosine similarities
        return ModelOutput(itm_score=itm_score, last_hidden_state=image_embeds, question_embeds=text)


class BlipForQuestionAnswering(BlipBase):
    """VQA: the question is encoded with the image-grounded encoder; the answer decoder cross-attends
    to the question states (not to the image) and generates from [DEC]."""

    def __init__(self, cfg: BlipConfig):
        if cfg.text.hidden_size != cfg.vision.hidden_size:
            # The decoder's cross-attention keys are sized for the image (encoder_hidden_size) but read
            # the question states, so the two widths must agree (HF fails on a matmul otherwise).
            raise ValueError(f"BlipForQuestionAnswering needs text hidden_size == vision hidden_size, got "
                             f"{cfg.text.hidden_size} and {cfg.vision.hidden_size}")
        super().__init__(cfg)
        self.text_encoder = BertTextModel(cfg.text)
        self.text_decoder = BertTextModel(cfg.text, lm_head=True)
        # HF passes the question's padding mask to the answer decoder's cross-attention, but its
        # BlipTextAttention never hands it on, so padded question positions are attended (transformers
        # 5.23). False reproduces that; True masks them as the original BLIP code does.
        self.mask_question_padding = False

    def encode_question(self, input_ids, pixel_values, attention_mask, interpolate_pos_encoding):
        image_embeds = self.encode_image(pixel_values, interpolate_pos_encoding).last_hidden_state
        _check_ids(input_ids, image_embeds.shape[0], "BlipForQuestionAnswering")
        question = self.text_encoder(input_ids, attention_mask, encoder_hidden_states=image_embeds)
        return image_embeds, question.last_hidden_state  # (B, 1 + N, Dv), (B, Lq, D)

    def forward(self, input_ids=None, pixel_values=None, decoder_input_ids=None, decoder_attention_mask=None,
                attention_mask=None, labels=None, interpolate_pos_encoding=False):
        if labels is None and decoder_input_ids is None:
            raise ValueError("BlipForQuestionAnswering.forward needs labels (training) or decoder_input_ids; "
                             "for answers call generate")
        image_embeds, question = self.encode_question(input_ids, pixel_values, attention_mask,
                                                      interpolate_pos_encoding)
        # As HF: labels already start with [DEC] and serve as the decoder's input as well.
        decoder_input_ids = labels if decoder_input_ids is None else decoder_input_ids
        answer = self.text_decoder(decoder_input_ids, decoder_attention_mask, encoder_hidden_states=question,
                                   encoder_attention_mask=attention_mask if self.mask_question_padding else None,
                                   is_decoder=True)
        # HF's VQA forward returns the loss but no logits
        return _decoder_output(answer.logits, labels, image_embeds, self.config.text.label_smoothing, ModelOutput())

    @torch.no_grad()
    def generate(self, input_ids=None, pixel_values=None, attention_mask=None, max_new_tokens=None, max_length=None,
                 interpolate_pos_encoding=False, use_cache=True, **options):
        """Greedy answer ids, [DEC] first, as HF's generate (options: HF's generate options)."""
        _, question = self.encode_question(input_ids, pixel_values, attention_mask, interpolate_pos_encoding)
        # HF lets the answer decoder see every question position here, padding included (its
        # question_attention_mask is all ones); we do the same to give the same answers.
        bos = torch.full((question.shape[0], 1), self.config.text.bos_token_id, dtype=torch.long,
                         device=question.device)
        steps = _max_new(max_new_tokens, max_length, 1, self.config.text.max_position_embeddings)
        return decode(self.text_decoder, bos, None, question, None, steps, use_cache, **options)
