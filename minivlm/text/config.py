"""Config of the text transformer shared by CLIP and SigLIP. The two towers differ only in switches:

| switch      | CLIP                                  | SigLIP                     |
|-------------|---------------------------------------|----------------------------|
| causal      | yes (a token sees only its left)      | no (bidirectional)         |
| pooling     | "eos": the end-of-text position       | "last": the last position  |
| head_size   | None (CLIPModel projects outside)     | Linear(D, head_size)       |
| hidden_act  | quick_gelu (openai) / gelu            | gelu_pytorch_tanh          |
"""
from dataclasses import dataclass

# openai's CLIP configs said eos_token_id=2 before transformers PR #24773; with that value HF pools
# at the largest token id of each row (the end-of-text token is the largest id in CLIP's vocabulary).
LEGACY_EOS_TOKEN_ID = 2


@dataclass
class TextConfig:
    vocab_size: int = 49408
    hidden_size: int = 512
    num_layers: int = 12
    num_heads: int = 8
    intermediate_size: int = 2048
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    causal: bool = True               # CLIP: causal mask; SigLIP: bidirectional
    pooling: str = "eos"              # "eos" (CLIP) | "last" (SigLIP)
    eos_token_id: int = 49407         # for pooling="eos"; LEGACY_EOS_TOKEN_ID selects the argmax rule
    head_size: int | None = None      # SigLIP's text head: Linear(hidden_size, head_size) on the pooled token
    pad_token_id: int | None = 1      # kept for tokenizers/training; the model does not read it

    def __post_init__(self):
        if self.pooling not in ("eos", "last"):
            raise ValueError(f"pooling must be 'eos' or 'last', got {self.pooling!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")

    @property
    def legacy_eos(self):
        return self.pooling == "eos" and self.eos_token_id == LEGACY_EOS_TOKEN_ID
