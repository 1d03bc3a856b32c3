"""The LLaMA decoder (Touvron et al. 2023), built from the shared blocks.

    x = embed_tokens(input_ids)                         # or inputs_embeds (LLaVA writes images there)
    for each layer:
        x = x + attn(norm1(x), causal & padding mask, RoPE, KV cache)
        x = x + mlp(norm2(x))                           # SwiGLU
    logits = lm_head(norm(x))                           # lm_head may be the embedding matrix (tied)

Pre-RMSNorm, rotary positions instead of a position table, grouped-query KV heads and SwiGLU are
what separate it from the ViT stack; every one of them is a shared block with a switch.
Inputs and outputs carry HF's names (input_ids, attention_mask, position_ids, past_key_values,
inputs_embeds, labels -> logits, loss, past_key_values).
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import Attention, KVCache, RMSNorm, SwiGLU, causal_mask, combine, padding_mask
from ..blocks.fused import fuse_projections
from ..blocks.linear import Linear
from ..blocks.rotary import RotaryEmbedding
from ..blocks.token_ids import lookup_tokens
from ..generation import generate, special_token_defaults
from ..outputs import ModelOutput
from .llama_config import LlamaConfig


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.attn = Attention(cfg.hidden_size, cfg.num_attention_heads, num_kv_heads=cfg.num_key_value_heads,
                              head_dim=cfg.head_dim, qkv_bias=cfg.attention_bias or cfg.qkv_bias, out_bias=cfg.attention_bias,
                              dropout=cfg.attention_dropout)
        self.norm2 = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, act=cfg.hidden_act, bias=cfg.mlp_bias)

    def forward(self, x, mask, rope, cache=None, causal=False):  # (B, L, D) -> (B, L, D)
        # x + sublayer(x), added into the sublayer's own fresh output (as blocks/transformer.py does)
        x = self.attn(self.norm1(x), mask=mask, rope=rope, cache=cache, causal=causal).add_(x)
        return self.mlp(self.norm2(x)).add_(x)


def check_inputs(input_ids, inputs_embeds, hidden_size):
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids (B, L) or inputs_embeds (B, L, D); got "
                         + ("both" if input_ids is not None else "neither"))
    if input_ids is not None and input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
    if inputs_embeds is not None and (inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != hidden_size):
        raise ValueError(f"inputs_embeds must be (batch, seq_len, {hidden_size}), got shape {tuple(inputs_embeds.shape)}")


def embed_and_cache(model, input_ids, inputs_embeds, attention_mask, past_key_values, use_cache, width):
    """The preamble every decoder here shares (LLaMA, OPT): the inputs checked, the tokens embedded
    (B, L, width), a KVCache made when use_cache asks for one, and the mask checked against cached + new
    positions. Returns x, cache (or None), past (the number of cached positions)."""
    check_inputs(input_ids, inputs_embeds, width)
    x = lookup_tokens(model.embed_tokens, input_ids) if inputs_embeds is None else inputs_embeds
    batch, length = x.shape[:2]
    cache = past_key_values
    if cache is None and use_cache:
        cache = KVCache(len(model.layers))
    past = len(cache) if cache is not None else 0
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, past + length):
        raise ValueError(f"attention_mask must be (batch, cached + new positions) = ({batch}, {past + length}), "
                         f"got shape {tuple(attention_mask.shape)}")
    return x, cache, past


def decoder_mask(length, past, attention_mask, device, window=None):
    """(B|1, 1, L, past + L): a query sees earlier real tokens (and the cached ones) only. A single
    new query (a decode step) is the last position: causality hides nothing from it, but a sliding
    window (Mistral, Qwen2) still hides the keys older than the window."""
    return combine(causal_mask(length, past + length, device=device, window=window)
                   if length > 1 or window is not None else None,
                   padding_mask(attention_mask) if attention_mask is not None else None)


class LlamaModel(nn.Module):
    """Embedding + decoder layers + final norm -> last_hidden_state (HF's LlamaModel)."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_parameters, cfg.max_position_embeddings)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=False, output_hidden_states=False):
        """attention_mask (B, past + L): 1 = token, 0 = padding, covering the cached positions too.
        position_ids (B, L): None gives past..past+L-1 for every row, as HF's forward does (generate
        passes positions counted from the mask, so left padding does not shift them)."""
        x, cache, past = embed_and_cache(self, input_ids, inputs_embeds, attention_mask, past_key_values, use_cache,
                                         self.config.hidden_size)  # x (B, L, D)
        batch, length = x.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=x.device).expand(batch, length)
        elif tuple(position_ids.shape[-2:]) != (batch, length) or position_ids.dim() not in (2, 3):
            # (3, B, L) with M-RoPE (Qwen2-VL): time, height and width positions per token.
            raise ValueError(f"position_ids must be ({batch}, {length}) (or (3, {batch}, {length}) with M-RoPE), "
                             f"got shape {tuple(position_ids.shape)}")

        # Without padding and without a window no mask tensor is built: a prompt uses sdpa's own causal
        # kernel (as HF's sdpa path does), a decode step needs no mask at all. Otherwise one mask per
        # distinct window of the layers (Mistral / Qwen2 may mix full and sliding layers).
        padded = attention_mask is not None and not bool(attention_mask.all())
        masks = {}  # window -> (mask (B|1, 1, L, past + L) or None, causal kernel?)
        for w in {self.config.layer_window(i) for i in range(len(self.layers))}:
            causal = w is None and length > 1 and past == 0 and not padded
            masks[w] = (None if causal else
                        decoder_mask(length, past, attention_mask if padded else None, x.device, window=w), causal)
        rope = self.rope(position_ids, dtype=x.dtype)  # cos, sin (B, L, Dh)
        hidden_states = [x] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            mask, causal = masks[self.config.layer_window(i)]
            x = layer(x, mask, rope, cache[i] if cache is not None else None, causal)
            if output_hidden_states:
                hidden_states.append(x)
        x = self.norm(x)
        out = ModelOutput(last_hidden_state=x)
        if use_cache:
            out.past_key_values = cache
        if output_hidden_states:
            # HF's convention: [0] embeddings, [i] after layer i, the last one after the final norm.
            out.hidden_states = tuple(hidden_states[:-1]) + (x,)
        return out


def causal_lm_loss(logits, labels, ignore_index=-100):
    """Token t predicts label t+1; mean cross-entropy over labels != ignore_index (HF's ForCausalLMLoss)."""
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must be (batch, seq_len) = {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
    shifted = F.pad(labels, (0, 1), value=ignore_index)[:, 1:]  # (B, L): the next token, -100 at the end
    return F.cross_entropy(logits.float().flatten(0, 1), shifted.flatten(), ignore_index=ignore_index)


class LlamaForCausalLM(nn.Module):
    """LlamaModel + lm_head; `generate` runs minivlm.generation on it (HF's LlamaForCausalLM).
    OPTForCausalLM (text/opt.py) is this class with another body."""

    body = LlamaModel

    static_kv_cache = True  # generate() may hand it a preallocated StaticKVCache

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.model = self.body(cfg)
        # reads the width tokens are embedded at (OPT may embed narrower than its layers run)
        self.lm_head = Linear(self.model.embed_tokens.embedding_dim, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight  # one matrix reads and writes tokens

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def fuse_projections(self, on=True):
        """q/k/v and gate/up as one matmul each (on) or the separate HF modules (off): blocks/fused.py."""
        return fuse_projections(self, on)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=False, logits_to_keep=0, output_hidden_states=False):
        """logits_to_keep=n > 0 computes logits for the last n positions only (generate's prefill)."""
        body = self.model(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
                          output_hidden_states)
        x = body.last_hidden_state
        logits = self.lm_head(x[:, -logits_to_keep:] if logits_to_keep else x)  # (B, L, V)
        out = ModelOutput(logits=logits)
        if labels is not None:
            out.loss = causal_lm_loss(logits, labels)
        if use_cache:
            out.past_key_values = body.past_key_values
        if output_hidden_states:
            out.hidden_states = body.hidden_states
        return out

    def generate(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        """Prompt + new tokens, greedy unless do_sample=True; eos / pad ids default to the checkpoint's
        generation_config.json, then the config's."""
        special_token_defaults(self, self.config, kwargs)
        return generate(self, input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                        **kwargs)
