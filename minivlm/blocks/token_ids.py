"""Token ids into embeddings, checked: an id outside the table is a bad input, named as such.

nn.Embedding on an id past its table fails with torch's "index out of range in self" on the CPU
and a device-side assert (which ends the CUDA context) on a GPU. Every model that embeds ids
looks them up through `lookup_tokens`, so the error names the id and the vocabulary instead.
Reading the ids' min and max makes the host wait for the device, so a decode step (ids that came
from the model's own argmax, in range by construction) skips the check: `check=False`.
"""
import torch
from torch import Tensor, nn


def check_one_input(input_ids: Tensor | None, inputs_embeds: Tensor | None, who: str = "the model") -> None:
    """Exactly one of input_ids (B, L) or inputs_embeds (B, L, D), as every HF forward takes them."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError(f"{who} needs exactly one of input_ids (B, L) or inputs_embeds (B, L, D); got "
                         + ("both" if input_ids is not None else "neither"))


def check_token_ids(input_ids: Tensor, vocab_size: int) -> None:
    """Raise a ValueError naming the first id outside 0..vocab_size-1 (one min/max, no per-id loop)."""
    if input_ids.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(input_ids))
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is outside the vocabulary of {vocab_size} ids (0..{vocab_size - 1}): "
                         f"a tokenizer for another model, or ids beyond the embedding table")


def lookup_tokens(embedding: nn.Embedding, input_ids: Tensor, check: bool = True) -> Tensor:  # (B, L) -> (B, L, D)
    if check:
        check_token_ids(input_ids, embedding.num_embeddings)
    return embedding(input_ids)
