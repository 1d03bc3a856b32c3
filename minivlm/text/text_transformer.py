"""The text tower of CLIP (Radford et al. 2021) and SigLIP (Zhai et al. 2023): one module, two switch sets.

    input_ids (B, L)
      -> token embedding + learned position embedding              (B, L, D)
      -> pre-norm encoder layers (blocks/transformer.py), with a mask:
           CLIP:   causal AND padding  (a token sees real tokens on its left)
           SigLIP: padding only        (every token sees every real token)
      -> final LayerNorm                                            last_hidden_state (B, L, D)
      -> one vector per text:
           CLIP:   the hidden state at the end-of-text token        pooler_output (B, D)
           SigLIP: the hidden state at the last position, then a Linear head (B, head_size)

The switches live in text/config.py; CLIP and SigLIP model classes only fill them in.
"""
import torch
from torch import nn

from ..blocks.masks import causal_mask, combine, padding_mask
from ..blocks.token_ids import lookup_tokens
from ..blocks.transformer import Encoder
from ..outputs import ModelOutput
from .config import TextConfig


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.config = cfg
        D = cfg.hidden_size
        self.token_embed = nn.Embedding(cfg.vocab_size, D)
        self.pos_embed = nn.Embedding(cfg.max_position_embeddings, D)
        self.encoder = Encoder(cfg.num_layers, dim=D, num_heads=cfg.num_heads, mlp_dim=cfg.intermediate_size,
                               act=cfg.hidden_act, eps=cfg.layer_norm_eps, dropout=cfg.attention_dropout)
        self.final_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(D, cfg.head_size) if cfg.head_size else None

    def check_inputs(self, input_ids, attention_mask, position_ids):
        cfg = self.config
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.is_floating_point():
            what = f"{input_ids.dtype} tensor of shape {tuple(input_ids.shape)}" if torch.is_tensor(input_ids) \
                else type(input_ids).__name__
            raise ValueError(f"input_ids must be an integer (batch, seq_len) tensor, got {what}")
        L = input_ids.shape[1]
        if L > cfg.max_position_embeddings:
            raise ValueError(f"input_ids has {L} tokens but the position table holds "
                             f"max_position_embeddings={cfg.max_position_embeddings}; truncate the text")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                             f"input_ids has {tuple(input_ids.shape)}; they must match")
        if position_ids is not None and position_ids.numel() and int(position_ids.max()) >= cfg.max_position_embeddings:
            raise ValueError(f"position_ids go up to {int(position_ids.max())} but max_position_embeddings="
                             f"{cfg.max_position_embeddings}")

    def mask(self, attention_mask, L, device):
        """Boolean "may attend" mask (B|1, 1, L, L), or None when every token may see every token."""
        causal = causal_mask(L, L, device=device) if self.config.causal else None
        pad = padding_mask(attention_mask) if attention_mask is not None else None
        return combine(causal, pad)

    def pool_index(self, input_ids):
        """(B,) position of the token that stands for the whole text."""
        cfg = self.config
        if cfg.pooling == "last":
            # SigLIP pools the last position even when it is padding: its tokenizer pads to a fixed
            # length and training saw exactly that (HF: last_hidden_state[:, -1]).
            return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
        if cfg.legacy_eos:
            # Legacy openai configs (eos_token_id == 2): end-of-text is the largest id in the row.
            return input_ids.argmax(dim=-1)
        is_eos = input_ids == cfg.eos_token_id  # (B, L)
        missing = ~is_eos.any(dim=-1)
        if missing.any():
            rows = missing.nonzero().flatten().tolist()
            raise ValueError(f"input_ids row(s) {rows} contain no eos_token_id={cfg.eos_token_id}; the text is "
                             f"pooled at its end-of-text token, which the tokenizer appends")
        # The FIRST end-of-text: padding may use the same id after it.
        return is_eos.int().argmax(dim=-1)

    def forward(self, input_ids, attention_mask=None, position_ids=None, output_hidden_states=False):
        self.check_inputs(input_ids, attention_mask, position_ids)
        B, L = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(L, device=input_ids.device)[None]  # (1, L)
        x = lookup_tokens(self.token_embed, input_ids) + self.pos_embed(position_ids)  # (B, L, D)
        x, hidden_states = self.encoder(x, mask=self.mask(attention_mask, L, x.device),
                                        output_hidden_states=output_hidden_states)
        x = self.final_norm(x)  # (B, L, D)
        pooled = x[torch.arange(B, device=x.device), self.pool_index(input_ids)]  # (B, D)
        if self.head is not None:
            pooled = self.head(pooled)  # (B, head_size)
        out = ModelOutput(last_hidden_state=x, pooler_output=pooled)
        if output_hidden_states:
            out.hidden_states = hidden_states
        return out
