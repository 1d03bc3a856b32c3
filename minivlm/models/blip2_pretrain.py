"""BLIP-2 stage 1 (Li et al. 2023, Sec. 3.2): the Q-Former learns to read a frozen image encoder.

One Q-Former, one batch of (image, caption) pairs, three objectives, three self-attention masks
(text/qformer.py `stage1_mask`):

    ITC  uni-modal mask: queries and text do not see each other. Similarity of an image and a text =
         the best of the Q query-text cosines (max over queries); a softmax over the batch each way.
    ITM  bi-directional mask: every query sees the text and the text the queries; itm_head on every
         query output, averaged -> matched / not matched. Hard negatives drawn by ITC similarity.
    ITG  multimodal causal mask: queries see only queries, text sees all queries and the text before
         it; the text is generated from what the queries extracted. The image reaches the text only
         through the queries, so ITG forces them to carry what a caption needs.

The tower is frozen (no gradient, computed once per batch). The parts carry the names of
Blip2ForImageTextRetrieval (models/blip2_retrieval.py), which this class extends with the ITG head,
so the trained Q-Former moves into the HF-shaped classes with load_state_dict.
There is no HF class for stage 1; BLIP-2's [DEC] token for ITG is the tokenizer's bos here.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..losses.blip import contrastive_loss, itm_loss, lm_loss, sample_hard_negatives
from ..outputs import ModelOutput
from ..text.bert import LMHead
from ..text.qformer import stage1_mask
from .blip2_retrieval import Blip2ForImageTextRetrieval


class Blip2QFormerForPretraining(Blip2ForImageTextRetrieval):
    def __init__(self, cfg, temperature=0.07):
        super().__init__(cfg)
        self.lm_head = LMHead(cfg.qformer_config)
        self.lm_head.decoder.weight = self.qformer.embeddings.word_embeddings.weight  # tied, as BERT's
        self.temp = nn.Parameter(torch.tensor(float(temperature)))  # learned, clamped as BLIP-2 does

    def qformer_pass(self, image_embeds, input_ids, attention_mask, kind):
        """Queries + text through the Q-Former under one stage-1 mask -> (query outputs (B, Q, D), text (B, L, D))."""
        Q = self.config.num_query_tokens
        queries = self.query_tokens[None].expand(image_embeds.shape[0], -1, -1)
        out = self.qformer(queries, input_ids, encoder_hidden_states=image_embeds,
                           self_mask=stage1_mask(Q, attention_mask, kind)).last_hidden_state
        return out[:, :Q], out[:, Q:]

    def forward(self, pixel_values, input_ids, attention_mask=None, generator=None):
        """input_ids (B, L) captions with bos first (it plays [CLS] and [DEC]); B >= 2 (negatives)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        B = input_ids.shape[0]
        with torch.no_grad():  # the frozen image encoder
            image = self.vision_model(pixel_values).last_hidden_state  # (B, 1 + N, Dv)

        # ITC: in one pass under the uni-modal mask, queries and text never meet.
        queries, text = self.qformer_pass(image, input_ids, attention_mask, "itc")
        image_feat = F.normalize(self.vision_projection(queries), dim=-1)   # (B, Q, E)
        text_feat = F.normalize(self.text_projection(text[:, 0]), dim=-1)   # (B, E)
        sim_i2t = torch.einsum("bqe,te->bqt", image_feat, text_feat).amax(dim=1)  # (B, B): best query
        temp = self.temp.clamp(0.001, 0.5)
        loss_itc = contrastive_loss(sim_i2t / temp)

        # ITM: the positive pair, a hard-negative image per text and a hard-negative text per image.
        neg_image = sample_hard_negatives(sim_i2t.t() / temp, generator)  # (B,)
        neg_text = sample_hard_negatives(sim_i2t / temp, generator)       # (B,)
        ids = torch.cat([input_ids, input_ids, input_ids[neg_text]])      # (3B, L)
        mask = torch.cat([attention_mask, attention_mask, attention_mask[neg_text]])
        images = torch.cat([image, image[neg_image], image])
        fused, _ = self.qformer_pass(images, ids, mask, "itm")             # (3B, Q, D)
        itm_logits = self.itm_head(fused).mean(dim=1)                      # (3B, 2)
        itm_labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(itm_logits.device)
        loss_itm = itm_loss(itm_logits, itm_labels)

        # ITG: the caption from the queries alone, left to right.
        _, text = self.qformer_pass(image, input_ids, attention_mask, "itg")
        logits = self.lm_head(text)  # (B, L, V)
        loss_itg = lm_loss(logits, input_ids.masked_fill(attention_mask == 0, -100))

        return ModelOutput(loss=loss_itc + loss_itm + loss_itg, loss_itc=loss_itc, loss_itm=loss_itm,
                           loss_itg=loss_itg, itm_logits=itm_logits, itm_labels=itm_labels,
                           logits_per_image=sim_i2t)
