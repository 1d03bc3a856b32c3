"""BLIP-2's stage-1 heads as HF ships them, and Blip2Model's feature getters.

Blip2ForImageTextRetrieval scores an image against a text two ways (Li et al. 2023, Sec. 3.2):

    ITM  queries + text in one Q-Former pass (bi-directional), the queries cross-attend to the image;
         itm_head on each query output (B, Q, 2), averaged over the queries -> (B, 2) [no match, match]
    ITC  queries alone (image side) and text alone (its first token), each projected and L2-normalised;
         the similarity is the best of the Q query-text cosines: max_q <z_q, t>  -> (B_images, B_texts)

In transformers 5 the text arrives after num_query_tokens image tokens (when the config names an
image_token_index): they are checked and cut here, as HF cuts them.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..outputs import ModelOutput
from .blip2 import Blip2Base, Blip2ForConditionalGeneration, check_image_tokens


class Blip2ForImageTextRetrieval(Blip2Base):
    def __init__(self, cfg):
        super().__init__(cfg)
        D, E = cfg.qformer_config.hidden_size, cfg.image_text_hidden_size
        self.vision_projection = nn.Linear(D, E)
        self.text_projection = nn.Linear(D, E)
        self.itm_head = nn.Linear(D, 2)

    def split_text(self, input_ids, attention_mask):
        """Drop the leading image tokens of a transformers 5 prompt: (B, Q + L) -> (B, L)."""
        Q, image_token = self.config.num_query_tokens, self.config.image_token_index
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError(f"Blip2ForImageTextRetrieval needs input_ids (batch, seq_len), got "
                             f"{None if input_ids is None else tuple(input_ids.shape)}")
        if image_token is None:
            return input_ids, attention_mask
        check_image_tokens(input_ids[:, :Q], image_token, Q)  # they lead every row
        return input_ids[:, Q:], attention_mask[:, Q:] if attention_mask is not None else None

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, use_image_text_matching_head=False,
                interpolate_pos_encoding=False):
        if pixel_values is None:
            raise ValueError("Blip2ForImageTextRetrieval needs pixel_values (batch, 3, H, W), got None")
        image_embeds = self.encode_image(pixel_values, interpolate_pos_encoding).last_hidden_state  # (B, 1+N, Dv)
        text_ids, text_mask = self.split_text(input_ids, attention_mask)
        Q = self.config.num_query_tokens
        if use_image_text_matching_head:
            if text_ids.shape[0] != image_embeds.shape[0]:
                raise ValueError(f"ITM scores pairs: {image_embeds.shape[0]} images but {text_ids.shape[0]} texts")
            states = self.query(image_embeds, text_ids, text_mask).last_hidden_state  # (B, Q + L, Dq)
            logits_per_image = self.itm_head(states[:, :Q]).mean(dim=1)  # (B, 2)
            return ModelOutput(logits_per_image=logits_per_image, logits_per_text=logits_per_image.t(),
                               text_embeds=states, image_embeds=image_embeds)
        queries = self.query(image_embeds).last_hidden_state  # (B, Q, Dq): the image side
        text = self.qformer(input_ids=text_ids, attention_mask=text_mask).last_hidden_state  # (Bt, L, Dq)
        image_feat = F.normalize(self.vision_projection(queries), dim=-1)  # (B, Q, E)
        text_feat = F.normalize(self.text_projection(text[:, 0]), dim=-1)  # (Bt, E)
        # every query against every text, then the best query per pair
        logits_per_image = torch.einsum("bqe,te->bqt", image_feat, text_feat).amax(dim=1)  # (B, Bt)
        return ModelOutput(logits_per_image=logits_per_image, logits_per_text=logits_per_image.t(),
                           text_embeds=text_feat, image_embeds=image_feat)


class Blip2Model(Blip2ForConditionalGeneration):
    """HF's Blip2Model: the same forward as the captioner, plus three getters."""

    def get_image_features(self, pixel_values, interpolate_pos_encoding=False):
        """The vision tower's output: last_hidden_state (B, 1 + N, Dv), pooler_output (B, Dv)."""
        return self.encode_image(pixel_values, interpolate_pos_encoding)

    def get_qformer_features(self, pixel_values, interpolate_pos_encoding=False):
        """The Q-Former's query outputs (B, Q, Dq), before the language projection."""
        return self.query(self.encode_image(pixel_values, interpolate_pos_encoding).last_hidden_state).last_hidden_state

    def get_text_features(self, input_ids, attention_mask=None):
        """The language model's body on text alone: last_hidden_state (B, L, D_lm)."""
        return ModelOutput(last_hidden_state=self.language_model.model(
            input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
