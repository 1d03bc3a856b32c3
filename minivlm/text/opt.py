"""OPT (Zhang et al. 2022), the GPT-style decoder: BLIP-2's language model, built from the shared blocks.

    x = embed_tokens(input_ids)  [-> project_in]  + embed_positions(position + 2)
    for each layer:                                  # pre-LN (do_layer_norm_before; OPT-350m: post-LN)
        x = x + attn(ln1(x))                         # causal & padding mask, KV cache
        x = x + fc2(relu(fc1(ln2(x))))               # the plain MLP, ReLU
    logits = lm_head([project_out](final_norm(x)))   # lm_head tied to embed_tokens

Against the LLaMA decoder (text/llama.py) it differs in four places, each a block with a switch:
learned absolute positions instead of RoPE, LayerNorm with bias instead of RMSNorm, a ReLU MLP
instead of SwiGLU, and biases everywhere. Two OPT quirks:

* the position table has 2 extra rows (the fairseq padding offset, HF's OPTLearnedPositionalEmbedding):
  position p reads row p + 2;
* positions are counted over real tokens of the attention mask (cumsum - 1), also in a plain
  forward, so a left-padded row starts at 0 whether or not generate passes position_ids.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..blocks import MLP, Attention, KVCache, causal_mask, combine, padding_mask
from ..generation import generate, special_token_defaults
from ..outputs import ModelOutput
from .llama import causal_lm_loss, check_inputs

POSITION_OFFSET = 2  # rows 0 and 1 of OPT's position table are never read by a real token


@dataclass
class OPTConfig:
    vocab_size: int = 50272
    hidden_size: int = 768
    num_hidden_layers: int = 12
    ffn_dim: int = 3072
    num_attention_heads: int = 12
    max_position_embeddings: int = 2048
    word_embed_proj_dim: int | None = None      # None: = hidden_size (no project_in / project_out)
    do_layer_norm_before: bool = True           # pre-LN; False (opt-350m) is post-LN
    remove_final_layer_norm: bool = False       # HF's _remove_final_layer_norm
    layer_norm_elementwise_affine: bool = True
    enable_bias: bool = True
    activation_function: str = "relu"
    dropout: float = 0.0
    attention_dropout: float = 0.0
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 2
    eos_token_id: int | list | None = 2

    def __post_init__(self):
        if self.word_embed_proj_dim is None:
            self.word_embed_proj_dim = self.hidden_size
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")


def mask_positions(attention_mask, past=0):
    """OPT's positions: count the real tokens (cumsum - 1), padding -> -1, the last L of them."""
    positions = attention_mask.long().cumsum(-1) * attention_mask.long() - 1  # (B, T)
    return positions[:, past:]


class OPTDecoderLayer(nn.Module):
    def __init__(self, cfg: OPTConfig):
        super().__init__()
        D, affine = cfg.hidden_size, cfg.layer_norm_elementwise_affine
        self.pre_norm = cfg.do_layer_norm_before
        self.norm1 = nn.LayerNorm(D, elementwise_affine=affine)
        self.attn = Attention(D, cfg.num_attention_heads, qkv_bias=cfg.enable_bias, out_bias=cfg.enable_bias,
                              dropout=cfg.attention_dropout)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=affine)
        self.mlp = MLP(D, cfg.ffn_dim, act=cfg.activation_function, bias=cfg.enable_bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def _sublayer(self, x, norm, fn):
        """Pre-LN: x + f(norm(x)); post-LN (opt-350m): norm(x + f(x))."""
        if self.pre_norm:
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))

    def forward(self, x, mask, cache=None):  # (B, L, D) -> (B, L, D)
        x = self._sublayer(x, self.norm1, lambda h: self.attn(h, mask=mask, cache=cache))
        return self._sublayer(x, self.norm2, self.mlp)


class OPTModel(nn.Module):
    """Embeddings + decoder layers + final norm (+ project_out) -> last_hidden_state (HF's OPTDecoder)."""

    def __init__(self, cfg: OPTConfig):
        super().__init__()
        self.config = cfg
        D, E = cfg.hidden_size, cfg.word_embed_proj_dim
        self.embed_tokens = nn.Embedding(cfg.vocab_size, E, padding_idx=cfg.pad_token_id)
        self.embed_positions = nn.Embedding(cfg.max_position_embeddings + POSITION_OFFSET, D)
        # opt-350m embeds words at 512 and runs the layers at 1024: two bias-free projections between.
        self.project_in = nn.Linear(E, D, bias=False) if E != D else None
        self.project_out = nn.Linear(D, E, bias=False) if E != D else None
        self.layers = nn.ModuleList(OPTDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        keep_final = cfg.do_layer_norm_before and not cfg.remove_final_layer_norm
        self.final_norm = nn.LayerNorm(D, elementwise_affine=cfg.layer_norm_elementwise_affine) if keep_final else None

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=False):
        """attention_mask (B, past + L), 1 = token; position_ids (B, L) or None: counted from the mask."""
        check_inputs(input_ids, inputs_embeds, self.config.word_embed_proj_dim)
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, E)
        batch, length = x.shape[:2]
        cache = past_key_values
        if cache is None and use_cache:
            cache = KVCache(len(self.layers))
        past = len(cache) if cache is not None else 0
        if attention_mask is not None and tuple(attention_mask.shape) != (batch, past + length):
            raise ValueError(f"attention_mask must be (batch, cached + new positions) = ({batch}, {past + length}), "
                             f"got shape {tuple(attention_mask.shape)}")
        if position_ids is None:
            full = attention_mask if attention_mask is not None else torch.ones(batch, past + length, device=x.device)
            position_ids = mask_positions(full, past)  # (B, L)
        elif tuple(position_ids.shape) != (batch, length):
            raise ValueError(f"position_ids must be ({batch}, {length}), got shape {tuple(position_ids.shape)}")
        top = int(position_ids.max()) if position_ids.numel() else 0
        if top >= self.config.max_position_embeddings:
            raise ValueError(f"position {top} is past OPT's position table of {self.config.max_position_embeddings} "
                             f"entries (max_position_embeddings); shorten the text")

        if self.project_in is not None:
            x = self.project_in(x)  # (B, L, D)
        x = x + self.embed_positions(position_ids + POSITION_OFFSET)
        mask = combine(causal_mask(length, past + length, device=x.device) if length > 1 else None,
                       padding_mask(attention_mask) if attention_mask is not None else None)  # (B|1, 1, L, T)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache[i] if cache is not None else None)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if self.project_out is not None:
            x = self.project_out(x)  # (B, L, E)
        out = ModelOutput(last_hidden_state=x)
        if use_cache:
            out.past_key_values = cache
        return out


class OPTForCausalLM(nn.Module):
    """OPTModel + lm_head over the word-embedding width (HF's OPTForCausalLM)."""

    def __init__(self, cfg: OPTConfig):
        super().__init__()
        self.config = cfg
        self.model = OPTModel(cfg)
        self.lm_head = nn.Linear(cfg.word_embed_proj_dim, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=False, logits_to_keep=0):
        body = self.model(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache)
        x = body.last_hidden_state
        logits = self.lm_head(x[:, -logits_to_keep:] if logits_to_keep else x)  # (B, L, V)
        out = ModelOutput(logits=logits)
        if labels is not None:
            out.loss = causal_lm_loss(logits, labels)
        if use_cache:
            out.past_key_values = body.past_key_values
        return out

    def generate(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        """Prompt + new tokens, greedy unless do_sample=True (minivlm.generation)."""
        special_token_defaults(self, self.config, kwargs)
        return generate(self, input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                        **kwargs)
