"""Key/value caches for autoregressive decoding.

Each attention layer appends the keys and values of the new positions and attends over all of
them, so a decode step costs one position of compute instead of the whole prefix.

* KVCache (the readable form): each layer's k, v grow by concatenation, (B, H_kv, T, Dh).
* StaticKVCache (gpt-fast's and litgpt's): buffers of prompt + `room` positions, written in place
  with index_copy_ at the slots the cache hands out. In a decode step a layer gets the *whole*
  buffer back and the decoder's mask hides the slots not written yet, so every step has the same
  shapes: the same code runs eagerly and under torch.compile. The prompt attends over its own k, v;
  the buffers are made when the prompt's forward has finished (`advance`), one layer at a time,
  so they are never held beside the prompt's activations (a peak above a growing cache's, measured
  by minivlm/bench/memory.py). The cache owns its length: a forward reserves its slots with `begin`
  and moves the length on with `advance` once every layer has written, so a forward that raised
  leaves the length as it was.

Both keep `reorder(beam_idx)`: beam search keeps, per step, the rows of the beams it continues.
"""
import torch
from torch import Tensor


def owned(t: Tensor) -> Tensor:
    """t itself, or a copy of it where t is a view into a larger tensor: the fused q|k|v projection
    hands back k and v as slices of one (B, L, (H + 2 H_kv) Dh) output, and a cache keeping such a
    slice would keep the whole output (queries included) alive until the next step."""
    return t if t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone()


class LayerCache:
    """Keys and values of one attention layer: (B, H_kv, T, Dh) each, grown along T."""

    def __init__(self):
        self.k = None
        self.v = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:  # (B, H_kv, L_new, Dh) -> (B, H_kv, T + L_new, Dh)
        if self.k is None:
            self.k, self.v = owned(k), owned(v)
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v


class KVCache:
    """One LayerCache per layer; `len(cache)` is the number of positions already cached."""

    def __init__(self, num_layers: int):
        self.layers = [LayerCache() for _ in range(num_layers)]

    def __getitem__(self, i: int) -> LayerCache:
        return self.layers[i]

    def __len__(self) -> int:
        k = self.layers[0].k
        return 0 if k is None else k.shape[2]

    def key_length(self, new: int) -> int:
        """How many keys a layer attends over after `new` positions are added: every position so far."""
        return len(self) + new

    def begin(self, new: int, device: torch.device) -> None:
        """Nothing to reserve: each layer grows its own tensors."""

    def advance(self) -> None:
        """Nothing to move on: the length is the tensors' own."""

    def reorder(self, beam_idx: Tensor) -> None:
        """Row i takes old row beam_idx[i] (beam search); beam_idx may be longer than the batch."""
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[beam_idx], layer.v[beam_idx]


class StaticLayerCache:
    """One layer's keys and values: the prompt's own tensors while the prompt runs, then buffers
    (B, H_kv, size, Dh) written at the owner's slots."""

    def __init__(self, owner: "StaticKVCache"):
        self.owner = owner
        self.k = self.v = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:  # (B, H_kv, L_new, Dh)
        if len(self.owner) == 0:  # the prompt: attended as it is, copied into buffers by owner.advance()
            self.k, self.v = owned(k), owned(v)
            return self.k, self.v
        self.k.index_copy_(2, self.owner.slots, k)
        self.v.index_copy_(2, self.owner.slots, v)
        return self.k, self.v  # (B, H_kv, size, Dh): the whole buffers

    def allocate(self, size: int) -> None:
        """The prompt's k, v (B, H_kv, L, Dh) -> buffers (B, H_kv, size, Dh) holding them in [0, L)."""
        k, v = self.k, self.v
        slots = torch.arange(k.shape[2], device=k.device)
        self.k = k.new_zeros(k.shape[0], k.shape[1], size, k.shape[3]).index_copy_(2, slots, k)
        self.v = v.new_zeros(v.shape[0], v.shape[1], size, v.shape[3]).index_copy_(2, slots, v)


class StaticKVCache:
    """A KVCache of fixed size: the prompt's length + `room` positions (gpt-fast's static cache).

    Layers are made on first use, so it needs neither the depth nor the widths of the model:
    `generate` makes one with room = max_new_tokens and hands it to the model's first call.
    """

    def __init__(self, room: int):
        self.room = room
        self.layers: list[StaticLayerCache] = []
        self.length = 0  # positions written by forwards that finished
        self.size = None  # prompt + room, fixed by the prompt
        self.slots = None  # (L_new,) the positions the running forward writes

    def __getitem__(self, i: int) -> StaticLayerCache:
        while len(self.layers) <= i:
            self.layers.append(StaticLayerCache(self))
        return self.layers[i]

    def __len__(self) -> int:
        return self.length

    def key_length(self, new: int) -> int:
        """The prompt attends over itself; a decode step over the whole buffer (the mask hides the rest)."""
        return new if self.length == 0 else self.size

    def begin(self, new: int, device: torch.device) -> None:
        """Reserve the slots [length, length + new) for the forward about to run."""
        if self.length == 0:
            self.size = new + self.room
        end = self.length + new
        if end > self.size:
            raise ValueError(f"static KV cache full: it holds {self.size} positions, {end} were asked for "
                             f"(make it with more room)")
        self.slots = torch.arange(self.length, end, device=device)

    def advance(self) -> None:
        """The running forward finished: its positions count as cached (after the prompt, the buffers
        are made, one layer at a time)."""
        if self.length == 0:
            for layer in self.layers:
                layer.allocate(self.size)
        self.length += len(self.slots)
        self.slots = None

    def reorder(self, beam_idx: Tensor) -> None:
        """Row i takes old row beam_idx[i] (beam search: each prompt's rows copied for its beams, then
        the beams' order each step); beam_idx may be longer than the batch."""
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[beam_idx], layer.v[beam_idx]
