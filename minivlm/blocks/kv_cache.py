"""A key/value cache for autoregressive decoding.

Each attention layer appends the keys and values of the new positions and attends over all of
them, so a decode step costs one position of compute instead of the whole prefix.
"""
import torch


class LayerCache:
    """Keys and values of one attention layer: (B, H_kv, T, Dh) each, grown along T."""

    def __init__(self):
        self.k = None
        self.v = None

    def update(self, k, v):  # (B, H_kv, L_new, Dh) -> (B, H_kv, T + L_new, Dh)
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v


class KVCache:
    """One LayerCache per layer; `len(cache)` is the number of positions already cached."""

    def __init__(self, num_layers):
        self.layers = [LayerCache() for _ in range(num_layers)]

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        k = self.layers[0].k
        return 0 if k is None else k.shape[2]

    def reorder(self, index):
        """Keep only the batch rows in `index` (e.g. to drop finished sequences)."""
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[index], layer.v[index]


class StaticLayerCache:
    """Keys and values of one layer in buffers allocated once: (B, H_kv, max_len, Dh) each.

    `update` writes the new positions in place at [length, length + L_new) and hands back views of
    the positions written so far, so a decode step copies one position instead of re-concatenating
    the whole prefix (gpt-fast's static cache). The buffers are made at the first update, when batch,
    heads, dtype and the prompt length are known: max_len = prompt length + `room`.

    For a compiled decode step (minivlm/fast/compiled.py) `slot` is set to a (1,) tensor: the new
    position is written there and the *whole* buffer comes back, so every step has the same shapes;
    the caller's mask hides the slots not written yet.
    """

    def __init__(self, room):
        self.room = room
        self.k = self.v = None
        self.length = 0
        self.slot = None

    def allocate(self, k, max_len):  # k (B, H_kv, L, Dh) -> two zero buffers (B, H_kv, max_len, Dh)
        b, h, _, d = k.shape
        self.k = k.new_zeros(b, h, max_len, d)
        self.v = k.new_zeros(b, h, max_len, d)

    def update(self, k, v):  # (B, H_kv, L_new, Dh) -> (B, H_kv, length + L_new, Dh) views
        if self.slot is not None:  # compiled step: fixed shapes, position given as a tensor
            self.k.index_copy_(2, self.slot, k)
            self.v.index_copy_(2, self.slot, v)
            return self.k, self.v
        if self.k is None:
            self.allocate(k, k.shape[2] + self.room)
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"static KV cache full: it holds {self.k.shape[2]} positions, "
                             f"{end} were asked for (make it with more room)")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class StaticKVCache:
    """A drop-in KVCache whose layers are StaticLayerCaches with `room` positions beyond the prompt.

    Layers are made on first use, so it needs neither the depth nor the widths of the model:
    `generate` makes one with room = max_new_tokens and hands it to the model's first call.
    """

    def __init__(self, room):
        self.room = room
        self.layers = []

    def __getitem__(self, i):
        while len(self.layers) <= i:
            self.layers.append(StaticLayerCache(self.room))
        return self.layers[i]

    def __len__(self):
        return self.layers[0].length if self.layers else 0

    def reorder(self, index):
        """Keep only the batch rows in `index`."""
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[index], layer.v[index]
