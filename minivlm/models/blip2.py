"""BLIP-2 (Li et al. 2023) and InstructBLIP (Dai et al. 2023): a frozen ViT, a Q-Former, a frozen LLM.

    pixel_values (B, 3, H, W) -> vision_model (BLIP's ViT switches)           image_embeds (B, 1 + N, Dv)
    query_tokens (Q, Dq) -> Q-Former, cross-attending to image_embeds         (B, Q, Dq)
    -> language_projection                                                    (B, Q, D_lm): a soft prompt
    input_ids: Q image tokens (config.image_token_index), then the text; the image tokens' embeddings
    are replaced by the Q projected queries -> the LLM (OPT or LLaMA) -> logits

LLaVA (models/llava.py) hands the LLM every patch (576 tokens for a 336px CLIP tower); BLIP-2 hands
it Q = 32, whatever the image size: the Q-Former is a learned, image-conditioned summary.
InstructBLIP differs in one place: the instruction is also read by the Q-Former (qformer_input_ids),
so the queries can pick what the question asks about (Dai et al. 2023, Sec. 2.2).

transformers 5 convention, kept here: the processor writes `num_query_tokens` image tokens into every
row of input_ids and the model writes the queries over them. A row with another count is refused
(HF checks only the batch total: one row with Q + 1 image tokens and another with Q - 1 are filled
by its masked_scatter without a word, the second image's first query landing in the first row;
measured with 5.23 in tests/test_blip2.py).
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..blocks.token_ids import lookup_tokens
from ..generation import generate, special_token_defaults
from ..outputs import ModelOutput
from ..text.llama import LlamaForCausalLM
from ..text.llama_config import LlamaConfig
from ..text.opt import OPTConfig, OPTForCausalLM
from ..text.qformer import QFormer, QFormerConfig
from ..vision import VisionConfig, VisionTransformer
from .llava import merge_image_features

LANGUAGE_MODELS = {OPTConfig: OPTForCausalLM, LlamaConfig: LlamaForCausalLM}


@dataclass
class Blip2Config:
    vision_config: VisionConfig
    qformer_config: QFormerConfig
    text_config: OPTConfig | LlamaConfig | None = None   # None: no language model (retrieval)
    num_query_tokens: int = 32
    image_token_index: int | None = None
    image_text_hidden_size: int = 256                    # width of the retrieval projections

    def __post_init__(self):
        if self.qformer_config.encoder_hidden_size != self.vision_config.hidden_size:
            raise ValueError(f"the Q-Former cross-attends to {self.qformer_config.encoder_hidden_size}-wide states "
                             f"but the vision tower is {self.vision_config.hidden_size} wide")

    @property
    def features_per_image(self):
        """Image tokens per image in input_ids (LLaVA's config has the same property): the Q queries."""
        return self.num_query_tokens


class Blip2Base(nn.Module):
    """The vision tower, the learned queries and the Q-Former: everything before the LLM."""

    def __init__(self, cfg: Blip2Config):
        super().__init__()
        self.config = cfg
        self.vision_model = VisionTransformer(cfg.vision_config)
        self.query_tokens = nn.Parameter(torch.zeros(cfg.num_query_tokens, cfg.qformer_config.hidden_size))  # (Q, Dq)
        self.qformer = QFormer(cfg.qformer_config)

    def encode_image(self, pixel_values, interpolate_pos_encoding=False):
        """(B, 3, H, W) -> the tower's output; last_hidden_state (B, 1 + N, Dv)."""
        return self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)

    def query(self, image_embeds, input_ids=None, attention_mask=None, output_cross_attentions=False):
        """The queries read the image (and, InstructBLIP, the instruction). Returns the Q-Former output;
        its first Q rows are the query outputs (B, Q, Dq)."""
        B, Q = image_embeds.shape[0], self.config.num_query_tokens
        queries = self.query_tokens[None].expand(B, -1, -1)  # (B, Q, Dq)
        if input_ids is not None and attention_mask is not None:  # the queries are never padding
            attention_mask = torch.cat([attention_mask.new_ones(B, Q), attention_mask], dim=1)
        return self.qformer(queries, input_ids, attention_mask, encoder_hidden_states=image_embeds,
                            output_cross_attentions=output_cross_attentions)


def check_image_tokens(input_ids, image_token_index, num_query_tokens):
    """Every row must hold exactly num_query_tokens image tokens (transformers 5's processor puts them there)."""
    if image_token_index is None:
        raise ValueError("this checkpoint's config has no image_token_index: minivlm follows transformers 5, where "
                         "the prompt holds num_query_tokens image tokens; add image_token_index to config.json")
    counts = (input_ids == image_token_index).sum(dim=1)  # (B,)
    bad = (counts != num_query_tokens).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"row {bad[0]} of input_ids holds {int(counts[bad[0]])} image token(s) (id "
                         f"{image_token_index}) but the Q-Former gives {num_query_tokens} query outputs per image; "
                         f"every row needs exactly {num_query_tokens}")


class Blip2ForConditionalGeneration(Blip2Base):
    """Captions and answers: the projected queries are the LLM's soft prompt (HF's class of that name)."""

    def __init__(self, cfg: Blip2Config):
        super().__init__(cfg)
        if type(cfg.text_config) not in LANGUAGE_MODELS:
            raise ValueError(f"BLIP-2's language model must be OPT or LLaMA, got {type(cfg.text_config).__name__}")
        self.language_projection = nn.Linear(cfg.qformer_config.hidden_size, cfg.text_config.hidden_size)
        self.language_model = LANGUAGE_MODELS[type(cfg.text_config)](cfg.text_config)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def get_image_features(self, pixel_values, interpolate_pos_encoding=False, **qformer_text):
        """HF's getter: the tower's output with pooler_output = the projected queries (B, Q, D_lm),
        and the Q-Former's output under qformer_outputs."""
        return self.soft_prompt(pixel_values, interpolate_pos_encoding, **qformer_text)

    def soft_prompt(self, pixel_values, interpolate_pos_encoding=False, **qformer_text):
        """image -> tower -> Q-Former -> language_projection: pooler_output (B, Q, D_lm) is what the LLM reads."""
        vision = self.encode_image(pixel_values, interpolate_pos_encoding)
        qformer = self.query(vision.last_hidden_state, *self._qformer_args(qformer_text))
        queries = qformer.last_hidden_state[:, :self.config.num_query_tokens]  # (B, Q, Dq)
        return ModelOutput(last_hidden_state=vision.last_hidden_state,
                           pooler_output=self.language_projection(queries), qformer_outputs=qformer)

    def _qformer_args(self, qformer_text):
        """Extra Q-Former text inputs: none for BLIP-2, whose Q-Former reads the queries alone."""
        if qformer_text:
            raise ValueError(f"{type(self).__name__} takes no {sorted(qformer_text)} (InstructBLIP does)")
        return ()

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, labels=None, position_ids=None,
                past_key_values=None, use_cache=False, interpolate_pos_encoding=False, logits_to_keep=0,
                **qformer_text):
        """pixel_values (B, 3, H, W) with input_ids (B, L) holding Q image tokens per row -> logits (B, L, V)
        [, loss]. A decode step (past_key_values given) passes the new ids alone; logits_to_keep=n > 0
        computes the last n positions' logits only (generate's prefill)."""
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError(f"{type(self).__name__} needs input_ids (batch, seq_len) holding "
                             f"{self.config.num_query_tokens} image tokens per row, got "
                             f"{None if input_ids is None else tuple(input_ids.shape)}")
        embeds = lookup_tokens(self.get_input_embeddings(), input_ids)  # (B, L, D_lm)
        out_extra = {}
        if pixel_values is not None:
            if pixel_values.shape[0] != input_ids.shape[0]:
                raise ValueError(f"{pixel_values.shape[0]} images but {input_ids.shape[0]} rows of input_ids: "
                                 f"BLIP-2 takes one image per row")
            check_image_tokens(input_ids, self.config.image_token_index, self.config.num_query_tokens)
            features = self.soft_prompt(pixel_values, interpolate_pos_encoding, **qformer_text)
            embeds = merge_image_features(embeds, input_ids, features.pooler_output, self.config.image_token_index)
            out_extra = dict(qformer_outputs=features.qformer_outputs, image_embeds=features.last_hidden_state)
        elif past_key_values is None:
            raise ValueError(f"{type(self).__name__} needs pixel_values (batch, 3, H, W) with the prompt")
        out = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                  past_key_values=past_key_values, labels=labels, use_cache=use_cache,
                                  logits_to_keep=logits_to_keep)
        out.update(out_extra)
        return out

    def default_prompt(self, batch, device):
        """HF's generate without input_ids: the Q image tokens then the LLM's bos, for every row."""
        cfg = self.config
        start = [cfg.image_token_index] * cfg.num_query_tokens + [cfg.text_config.bos_token_id]
        return torch.tensor([start], dtype=torch.long, device=device).expand(batch, -1)

    @torch.no_grad()
    def generate(self, pixel_values, input_ids=None, attention_mask=None, interpolate_pos_encoding=False,
                 **kwargs):
        """Greedy (by default) continuation: prompt ids + new ids, as HF's generate returns them. The image
        and the Q-Former run once, in the prefill; decode steps feed the new ids through the KV cache."""
        if input_ids is None:
            input_ids = self.default_prompt(pixel_values.shape[0], pixel_values.device)
        special_token_defaults(self, self.config.text_config, kwargs)
        # pixel_values and the rest (InstructBLIP's qformer_input_ids ...) go to the prefill step only
        return generate(self, input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                        interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)


class InstructBlipForConditionalGeneration(Blip2ForConditionalGeneration):
    """BLIP-2 whose Q-Former also reads the instruction: qformer_input_ids (B, Lq) after the queries,
    with their own word/position embeddings and BERT tokenizer (HF's class of that name)."""

    def _qformer_args(self, qformer_text):
        unknown = set(qformer_text) - {"qformer_input_ids", "qformer_attention_mask"}
        if unknown:
            raise ValueError(f"InstructBLIP got unknown input(s) {sorted(unknown)}")
        ids = qformer_text.get("qformer_input_ids")
        if ids is None:
            raise ValueError("InstructBLIP needs qformer_input_ids (batch, seq_len): the instruction, tokenized "
                             "for the Q-Former")
        mask = qformer_text.get("qformer_attention_mask")
        return ids, mask if mask is not None else torch.ones_like(ids)
