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

from ..blocks import MLP, Attention
from ..outputs import ModelOutput
from .llama import LlamaForCausalLM, decoder_mask, embed_and_cache

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


def mask_positions(attention_mask: torch.Tensor, past: int = 0) -> torch.Tensor:
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

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache=None) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
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
                inputs_embeds=None, use_cache=False, output_hidden_states=False):
        """attention_mask (B, past + L), 1 = token; position_ids (B, L) or None: counted from the mask."""
        if output_hidden_states:
            raise ValueError("output_hidden_states is not implemented for OPT in minivlm")
        x, cache, past = embed_and_cache(self, input_ids, inputs_embeds, attention_mask, past_key_values, use_cache,
                                         self.config.word_embed_proj_dim)  # x (B, L, E)
        batch, length = x.shape[:2]
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
        keys = cache.key_length(length) if cache is not None else length
        mask = decoder_mask(length, past, keys, attention_mask, x.device)  # (B|1, 1, L, keys)
        if cache is not None:
            cache.begin(length, x.device)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache[i] if cache is not None else None)
        if cache is not None:
            cache.advance()
        if self.final_norm is not None:
            x = self.final_norm(x)
        if self.project_out is not None:
            x = self.project_out(x)  # (B, L, E)
        out = ModelOutput(last_hidden_state=x)
        if use_cache:
            out.past_key_values = cache
        return out


class OPTForCausalLM(LlamaForCausalLM):
    """OPTModel + lm_head over the word-embedding width, tied to embed_tokens unless the config says not
    (HF's OPTForCausalLM): LLaMA's head, loss and generate around another body."""

    body = OPTModel
