"""The Q-Former of BLIP-2 (Li et al. 2023, Sec. 3.1): BLIP's BERT-style layers, read by learned queries.

    query_tokens (Q, D), learned  ─┐
    [text ids -> word + position] ─┴─ concat -> LayerNorm                       (B, Q + L, D)
      -> N x [ self-attention over queries and text (the mask decides who sees whom)
               -> cross-attention to the frozen image features, queries only,
                  in every `cross_attention_frequency`-th layer
               -> feed-forward: one MLP for the query positions, another for the text ]
    -> last_hidden_state; its first Q rows are the Q-Former's output for the LLM

Against BLIP's text transformer (text/bert.py) three things change, each a small override of its
post-norm BertLayer: the queries are inputs as well as text, only the queries cross-attend, and
queries and text have separate feed-forward weights (the paper's "two transformer submodules that
share the same self-attention layers"). The image enters only through the queries, so whatever
the LLM later learns about the picture passes through these Q vectors: the bottleneck.

Stage-1 pre-training (Sec. 3.2, Fig. 2) uses one network under three self-attention masks,
`stage1_mask` below: uni-modal (ITC), bi-directional (ITM) and multimodal causal (ITG).
"""
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..blocks import MLP, combine, padding_mask
from ..outputs import ModelOutput
from .bert import BertConfig, BertEmbeddings, BertLayer


@dataclass
class QFormerConfig(BertConfig):
    cross_attention_frequency: int = 2    # layer i cross-attends when i % frequency == 0
    text_input: bool = False              # HF's use_qformer_text_input: text positions have their own MLP
    text_embeddings: bool = False         # word / position tables (InstructBLIP, BLIP-2 retrieval)
    cross_attention: bool = True          # (BertConfig's switch; per layer it follows the frequency)

    def __post_init__(self):
        super().__post_init__()
        if self.cross_attention_frequency < 1:
            raise ValueError(f"cross_attention_frequency must be >= 1, got {self.cross_attention_frequency}")


class QFormerEmbeddings(BertEmbeddings):
    """LayerNorm over [queries; word + position embeddings of the text]. Without text tables (BLIP-2's
    captioner) only the norm remains: the queries are the whole input."""

    def __init__(self, cfg: QFormerConfig):
        super().__init__(cfg)
        if not cfg.text_embeddings:
            self.word_embeddings = self.position_embeddings = None

    def forward(self, query_embeds=None, input_ids=None):  # (B, Q, D), (B, L) -> (B, Q + L, D)
        parts = [] if query_embeds is None else [query_embeds]
        if input_ids is not None:
            if self.word_embeddings is None:
                raise ValueError("this Q-Former has no word embeddings (qformer text input is not part of this "
                                 "model); pass the queries only")
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]  # text counts from 0
            parts.append(self.text_embed(input_ids, positions).to(parts[0].dtype if parts else self.norm.weight.dtype))
        return self.dropout(self.norm(torch.cat(parts, dim=1)))


class QFormerLayer(BertLayer):
    """BertLayer whose cross-attention and feed-forward split the sequence at query_length."""

    def __init__(self, cfg: QFormerConfig, cross_attention: bool):
        super().__init__(replace(cfg, cross_attention=cross_attention))
        self.mlp_query = MLP(cfg.hidden_size, cfg.intermediate_size, act=cfg.hidden_act)
        self.mlp_query_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if not cfg.text_input:  # BLIP-2's captioner: the text MLP exists only where text goes in
            self.mlp = self.mlp_norm = None

    def forward(self, x, query_length, mask=None, context=None, context_mask=None, return_probs=False):
        """x (B, Q + L, D) -> (B, Q + L, D), and the queries' cross-attention map (B, H, Q, Lc) or None."""
        x = self.self_attend(x, mask)
        queries, text = x[:, :query_length], x[:, query_length:]  # (B, Q, D), (B, L, D)
        probs = None
        if query_length and self.cross_attn is not None:
            queries = self.cross_attend(queries, context, context_mask, return_probs=return_probs)
            queries, probs = queries if return_probs else (queries, None)
        parts = [self.feed_forward(queries, self.mlp_query, self.mlp_query_norm)] if query_length else []
        if text.shape[1]:
            if self.mlp is None:
                raise ValueError("text positions reached a Q-Former built without a text feed-forward "
                                 "(use_qformer_text_input=False)")
            parts.append(self.feed_forward(text, self.mlp, self.mlp_norm))
        return torch.cat(parts, dim=1), probs


class QFormer(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = QFormerEmbeddings(cfg)
        self.layers = nn.ModuleList(QFormerLayer(cfg, i % cfg.cross_attention_frequency == 0)
                                    for i in range(cfg.num_layers))

    def forward(self, query_embeds=None, input_ids=None, attention_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, self_mask=None, output_cross_attentions=False):
        """query_embeds (B, Q, D); input_ids (B, L) text after the queries; attention_mask (B, Q + L) with
        1 = attend; encoder_hidden_states (B, Lc, Dv) the image, needed whenever there are queries;
        self_mask bool (B|1, 1, Q+L, Q+L): who may see whom (stage1_mask), on top of the padding.
        Returns last_hidden_state (B, Q + L, D), pooler_output (B, D) = the first row
        [, cross_attentions: one (B, H, Q, Lc) map per cross-attending layer]."""
        Q = 0 if query_embeds is None else query_embeds.shape[1]
        if Q and encoder_hidden_states is None:
            raise ValueError("the Q-Former's queries need the image: encoder_hidden_states (batch, positions, width)")
        x = self.embeddings(query_embeds, input_ids)  # (B, T, D), T = Q + L
        B, T = x.shape[:2]
        if attention_mask is not None and tuple(attention_mask.shape) != (B, T):
            raise ValueError(f"the Q-Former's attention_mask must cover queries + text = ({B}, {T}), "
                             f"got {tuple(attention_mask.shape)}")
        mask = combine(padding_mask(attention_mask) if attention_mask is not None else None, self_mask)
        context, context_mask = encoder_hidden_states, None
        if context is not None:
            context = context.to(x.dtype)
            if encoder_attention_mask is not None:
                context_mask = padding_mask(encoder_attention_mask)  # (B, 1, 1, Lc)
        maps = []
        for layer in self.layers:
            x, probs = layer(x, Q, mask, context, context_mask, return_probs=output_cross_attentions)
            if probs is not None:
                maps.append(probs)
        out = ModelOutput(last_hidden_state=x, pooler_output=x[:, 0])
        if output_cross_attentions:
            out.cross_attentions = tuple(maps)
        return out


def stage1_mask(num_queries, text_mask, kind):
    """The self-attention masks of BLIP-2's stage 1 (Fig. 2, right), bool (B, 1, Q + L, Q + L), True = may see.

    "itc" uni-modal:         queries see queries, text sees text; neither sees the other
    "itm" bi-directional:    everyone sees everyone
    "itg" multimodal causal: queries see queries only; text sees all queries and the text before it
    text_mask (B, L): 1 = real text token (padding is hidden as a key in every mode).
    """
    B, L = text_mask.shape
    Q, T, device = num_queries, num_queries + text_mask.shape[1], text_mask.device
    is_query = torch.arange(T, device=device) < Q  # (T,)
    rows, cols = is_query[:, None], is_query[None, :]  # (T, 1), (1, T)
    if kind == "itc":
        allowed = rows == cols
    elif kind == "itm":
        allowed = torch.ones(T, T, dtype=torch.bool, device=device)
    elif kind == "itg":
        causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        allowed = (rows & cols) | (~rows & (cols | causal))
    else:
        raise ValueError(f"stage-1 mask kind must be 'itc', 'itm' or 'itg', got {kind!r}")
    keys = torch.cat([torch.ones(B, Q, dtype=torch.bool, device=device), text_mask.bool()], dim=1)  # (B, T)
    return (allowed[None] & keys[:, None, :])[:, None]  # (B, 1, T, T)
