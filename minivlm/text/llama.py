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
from torch import Tensor, nn

from ..blocks import Attention, KVCache, RMSNorm, SwiGLU, causal_mask, combine, padding_mask
from ..blocks.rotary import RotaryEmbedding
from ..blocks.token_ids import check_one_input, lookup_tokens
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

    def forward(self, x: Tensor, mask: Tensor | None, rope: tuple[Tensor, Tensor], cache=None,
                causal: bool = False) -> Tensor:  # (B, L, D) -> (B, L, D)
        x = x + self.attn(self.norm1(x), mask=mask, rope=rope, cache=cache, causal=causal)
        return x + self.mlp(self.norm2(x))


def check_inputs(input_ids: Tensor | None, inputs_embeds: Tensor | None, hidden_size: int) -> None:
    check_one_input(input_ids, inputs_embeds)
    if input_ids is not None and input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
    if inputs_embeds is not None and (inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != hidden_size):
        raise ValueError(f"inputs_embeds must be (batch, seq_len, {hidden_size}), got shape {tuple(inputs_embeds.shape)}")


def embed_and_cache(model: nn.Module, input_ids: Tensor | None, inputs_embeds: Tensor | None,
                    attention_mask: Tensor | None, past_key_values, use_cache: bool, width: int):
    """The preamble every decoder here shares (LLaMA, OPT): the inputs checked, the tokens embedded
    (B, L, width), a KVCache made when use_cache asks for one, and the mask checked against cached + new
    positions. Returns x, cache (or None), past (the number of cached positions).
    Token ids are checked against the vocabulary when nothing is cached yet (the prefill): a decode
    step's ids are the model's own picks, and reading them would make the host wait on the device."""
    check_inputs(input_ids, inputs_embeds, width)
    cache = past_key_values
    if cache is None and use_cache:
        cache = KVCache(len(model.layers))
    past = len(cache) if cache is not None else 0
    x = lookup_tokens(model.embed_tokens, input_ids, check=past == 0) if inputs_embeds is None else inputs_embeds
    batch, length = x.shape[:2]
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, past + length):
        raise ValueError(f"attention_mask must be (batch, cached + new positions) = ({batch}, {past + length}), "
                         f"got shape {tuple(attention_mask.shape)}")
    return x, cache, past


def decoder_mask(length: int, past: int, keys: int, attention_mask: Tensor | None, device: torch.device,
                 window: int | None = None) -> Tensor:
    """(B|1, 1, L, keys): the L new queries sit at positions past..past+L-1 and see the keys at or
    before them that are real tokens (and, with a sliding window (Mistral, Qwen2), not older than
    it). keys = past + L for a growing cache, the whole buffer for a static one: its slots past the
    queries are not written yet and stay hidden."""
    causal = causal_mask(length, keys, device=device, window=window, past=past)
    if attention_mask is None:
        return causal
    return combine(causal, padding_mask(F.pad(attention_mask, (0, keys - attention_mask.shape[1]))))


class LlamaModel(nn.Module):
    """Embedding + decoder layers + final norm -> last_hidden_state (HF's LlamaModel)."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_parameters, cfg.max_position_embeddings)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, past_key_values=None, inputs_embeds: Tensor | None = None,
                use_cache: bool = False, output_hidden_states: bool = False) -> ModelOutput:
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
        keys = cache.key_length(length) if cache is not None else length  # what each layer attends over

        # One mask per distinct window of the layers (Mistral / Qwen2 may mix full and sliding layers).
        # A prompt with no padding, no window and no cache buffer to hide uses sdpa's own causal kernel
        # instead of a mask tensor (as HF's sdpa path does); only a prompt asks whether there is padding
        # (reading the mask makes the host wait on the device: never in a decode step).
        plain_prompt = past == 0 and length > 1 and keys == length and \
            (attention_mask is None or bool(attention_mask.all()))
        masks = {}  # window -> (mask (B|1, 1, L, keys) or None, causal kernel?)
        for w in {self.config.layer_window(i) for i in range(len(self.layers))}:
            causal = plain_prompt and w is None
            masks[w] = (None if causal else decoder_mask(length, past, keys, attention_mask, x.device, window=w), causal)
        # cos, sin (B, L, Dh); positions are read (a host wait) only for the prompt: a decode step's are
        # below past + L, the positions' count so far (generate counts them over real tokens)
        rope = self.rope(position_ids, dtype=x.dtype, reach=None if past == 0 else past + length)
        if cache is not None:
            cache.begin(length, x.device)
        hidden_states = [x] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            mask, causal = masks[self.config.layer_window(i)]
            x = layer(x, mask, rope, cache[i] if cache is not None else None, causal)
            if output_hidden_states:
                hidden_states.append(x)
        if cache is not None:
            cache.advance()  # every layer wrote its k, v: the new positions count as cached
        x = self.norm(x)
        out = ModelOutput(last_hidden_state=x)
        if use_cache:
            out.past_key_values = cache
        if output_hidden_states:
            # HF's convention: [0] embeddings, [i] after layer i, the last one after the final norm.
            out.hidden_states = tuple(hidden_states[:-1]) + (x,)
        return out


def causal_lm_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
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
        self.lm_head = nn.Linear(self.model.embed_tokens.embedding_dim, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight  # one matrix reads and writes tokens

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, past_key_values=None, inputs_embeds: Tensor | None = None,
                labels: Tensor | None = None, use_cache: bool = False, logits_to_keep: int = 0,
                output_hidden_states: bool = False) -> ModelOutput:
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

    def generate(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                 inputs_embeds: Tensor | None = None, **kwargs) -> Tensor:
        """Prompt + new tokens, greedy unless do_sample=True; eos / pad ids default to the checkpoint's
        generation_config.json, then the config's."""
        special_token_defaults(self, self.config, kwargs)
        return generate(self, input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                        **kwargs)
