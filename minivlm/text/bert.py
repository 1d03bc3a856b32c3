"""The BERT-style text transformer of BLIP, written once and used in three modes (Li et al. 2022, Fig. 2):

| mode                     | self-attention         | cross-attention to the image | first token  | used for    |
|--------------------------|------------------------|------------------------------|--------------|-------------|
| unimodal encoder         | bidirectional          | no                           | [CLS]        | ITC         |
| image-grounded encoder   | bidirectional          | yes                          | [ENC]        | ITM, VQA q. |
| image-grounded decoder   | causal                 | yes                          | [DEC] (bos)  | LM, captions|

The mode is chosen per call: `encoder_hidden_states=None` skips the cross-attention sub-layer and
`is_decoder=True` makes the self-attention causal. The layers are BERT's post-norm blocks
(Devlin et al. 2019): every sub-layer is followed by LayerNorm(x + sublayer(x)), unlike the
pre-norm vision tower.

    input_ids (B, L) -> word + learned position embeddings -> LayerNorm      (B, L, D)
      -> N x [ self-attn -> add & norm -> (cross-attn -> add & norm) -> MLP -> add & norm ]
      -> (LM head: dense -> act -> LayerNorm -> vocab projection tied to the word embeddings)
"""
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..blocks import Attention, KVCache, LayerCache, MLP, causal_mask, combine, get_activation, padding_mask
from ..blocks.token_ids import lookup_tokens
from ..outputs import ModelOutput


@dataclass
class BertConfig:
    vocab_size: int = 30524
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    cross_attention: bool = True          # layers carry a cross-attention sub-layer (HF: is_decoder)
    encoder_hidden_size: int = 768        # width of the states cross-attended to (the vision width)
    pad_token_id: int = 0
    bos_token_id: int = 30522             # BLIP's [DEC]
    sep_token_id: int = 102               # [SEP]: ends a caption / answer
    label_smoothing: float = 0.0          # of the LM loss; BLIP trains with 0.1

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")


class BertEmbeddings(nn.Module):
    """word + learned absolute position embeddings, then LayerNorm (BERT's token-type embedding is dropped)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.max_positions = cfg.max_position_embeddings
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def text_embed(self, input_ids, position_ids):  # (B, L), (B|1, L) -> (B, L, D), before the norm
        top = int(position_ids.max()) if position_ids.numel() else 0
        if top >= self.max_positions:
            raise ValueError(f"position {top} is past the position table of {self.max_positions} entries "
                             f"(max_position_embeddings); shorten the text")
        return lookup_tokens(self.word_embeddings, input_ids) + self.position_embeddings(position_ids)

    def forward(self, input_ids, position_ids):  # (B, L), (B|1, L) -> (B, L, D)
        return self.dropout(self.norm(self.text_embed(input_ids, position_ids)))


class BertLayer(nn.Module):
    """Post-norm: x = norm(x + sublayer(x)) for self-attention, cross-attention and the MLP."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        D, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.self_attn = Attention(D, cfg.num_heads, dropout=cfg.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(D, eps=eps)
        if cfg.cross_attention:
            self.cross_attn = Attention(D, cfg.num_heads, kv_dim=cfg.encoder_hidden_size, dropout=cfg.attention_dropout)
            self.cross_attn_norm = nn.LayerNorm(D, eps=eps)
        else:
            self.cross_attn = self.cross_attn_norm = None
        self.mlp = MLP(D, cfg.intermediate_size, act=cfg.hidden_act)
        self.mlp_norm = nn.LayerNorm(D, eps=eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, context: Tensor | None = None,
                context_mask: Tensor | None = None, cache=None, cross_cache=None) -> Tensor:
        """x (B, L, D); context (B, Lc, Dc) or None (unimodal: no cross-attention)."""
        x = self.self_attend(x, mask, cache)
        if context is not None:
            x = self.cross_attend(x, context, context_mask, cross_cache)
        return self.feed_forward(x, self.mlp, self.mlp_norm)

    # The three post-norm sub-layers, also called one by one by the Q-Former (text/qformer.py).
    def self_attend(self, x: Tensor, mask: Tensor | None = None, cache=None) -> Tensor:
        return self.self_attn_norm(x + self.dropout(self.self_attn(x, mask=mask, cache=cache)))

    def cross_attend(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None, cache=None,
                     return_probs: bool = False):
        """return_probs: also the attention map (B, H, L, Lc), for pictures."""
        if self.cross_attn is None:
            raise ValueError("encoder_hidden_states given, but this text model has no cross-attention layers")
        if return_probs:
            out, probs = self.cross_attn.forward_with_probs(x, context, mask=context_mask, cache=cache)
        else:
            out = self.cross_attn(x, context, mask=context_mask, cache=cache)
        x = self.cross_attn_norm(x + self.dropout(out))
        return (x, probs) if return_probs else x

    def feed_forward(self, x: Tensor, mlp: nn.Module, norm: nn.Module) -> Tensor:
        return norm(x + self.dropout(mlp(x)))


class LMHead(nn.Module):
    """BERT's prediction head: dense -> act -> LayerNorm -> vocab projection (+ its own bias)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.transform = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = get_activation(cfg.hidden_act)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)

    def forward(self, x):  # (B, L, D) -> (B, L, V)
        return self.decoder(self.norm(self.act(self.transform(x))))


class ContextCache(LayerCache):
    """Keys/values of the cross-attended states: they do not change while decoding, so they are
    projected on the first step only; later steps pass an empty context and get these back."""

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is None:
            self.k, self.v = k, v
        return self.k, self.v


class DecodeCache:
    """Self-attention KVCache plus the per-layer ContextCache of the cross-attention."""

    def __init__(self, num_layers: int):
        self.self_attn = KVCache(num_layers)
        self.cross_attn = [ContextCache() for _ in range(num_layers)]

    def __len__(self) -> int:
        return len(self.self_attn)

    def reorder(self, rows):
        """Row i takes old row rows[i] (beam search: its beams, then their reordering each step)."""
        self.self_attn.reorder(rows)
        for layer in self.cross_attn:
            if layer.k is not None:
                layer.k, layer.v = layer.k[rows], layer.v[rows]


class BertTextModel(nn.Module):
    """One text transformer for all three modes; `lm_head=True` adds the prediction head (the decoder)."""

    def __init__(self, cfg: BertConfig, lm_head: bool = False):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_layers))
        self.head = LMHead(cfg) if lm_head else None
        if self.head is not None:
            # BERT ties the output projection to the input word embeddings (HF ties it for BLIP).
            self.head.decoder.weight = self.embeddings.word_embeddings.weight

    def new_cache(self) -> DecodeCache:
        return DecodeCache(len(self.layers))

    def forward(self, input_ids, attention_mask=None, position_ids=None, encoder_hidden_states=None,
                encoder_attention_mask=None, is_decoder=False, cache=None):
        """input_ids (B, L); attention_mask (B, T) over all T = cached + L positions (1 = real token);
        encoder_hidden_states (B, Lc, Dc) for the image-grounded modes; is_decoder: causal self-attention.
        Returns ModelOutput(last_hidden_state (B, L, D)[, logits (B, L, V)])."""
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if torch.is_tensor(input_ids) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a (batch, seq_len) tensor of token ids, got {shape}")
        B, L = input_ids.shape
        past = len(cache) if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + L, device=input_ids.device)[None]  # (1, L)
        x = self.embeddings(input_ids, position_ids)  # (B, L, D)

        if attention_mask is not None and tuple(attention_mask.shape) != (B, past + L):
            raise ValueError(f"attention_mask must be (batch, cached + new positions) = {(B, past + L)}, "
                             f"got {tuple(attention_mask.shape)}")
        mask = combine(padding_mask(attention_mask) if attention_mask is not None else None,
                       causal_mask(L, past + L, device=x.device) if is_decoder else None)  # (B|1, 1, L, T)
        context, context_mask = encoder_hidden_states, None
        if context is not None:
            if context.dim() != 3 or context.shape[0] != B:
                raise ValueError(f"encoder_hidden_states must be (batch={B}, positions, width), "
                                 f"got {tuple(context.shape)}")
            context = context.to(x.dtype)
            if encoder_attention_mask is not None:
                context_mask = padding_mask(encoder_attention_mask)  # (B, 1, 1, Lc)
            if cache is not None and past > 0:
                context = context[:, :0]  # keys/values already in the ContextCache
        for i, layer in enumerate(self.layers):
            x = layer(x, mask=mask, context=context, context_mask=context_mask,
                      cache=cache.self_attn[i] if cache is not None else None,
                      cross_cache=cache.cross_attn[i] if cache is not None else None)
        out = ModelOutput(last_hidden_state=x)
        if self.head is not None:
            out.logits = self.head(x)
        return out


def share_encoder_decoder(encoder: BertTextModel, decoder: BertTextModel) -> None:
    """BLIP's parameter sharing for pre-training (Li et al. 2022, Sec. 3.2): the image-grounded
    encoder and decoder share everything except the self-attention layers, whose roles
    (bidirectional vs causal) conflict most. Makes `decoder` reuse `encoder`'s modules in place."""
    if len(encoder.layers) != len(decoder.layers):
        raise ValueError(f"cannot share: encoder has {len(encoder.layers)} layers, decoder {len(decoder.layers)}")
    decoder.embeddings = encoder.embeddings
    for enc, dec in zip(encoder.layers, decoder.layers):
        dec.cross_attn, dec.cross_attn_norm = enc.cross_attn, enc.cross_attn_norm
        dec.mlp, dec.mlp_norm = enc.mlp, enc.mlp_norm
    if decoder.head is not None:  # keep the LM head tied to the (now shared) word embeddings
        decoder.head.decoder.weight = decoder.embeddings.word_embeddings.weight
    return decoder
