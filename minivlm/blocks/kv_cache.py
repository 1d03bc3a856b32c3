"""A key/value cache for autoregressive decoding.

Each attention layer appends the keys and values of the new positions and attends over all of
them, so a decode step costs one position of compute instead of the whole prefix.
"""
import torch


def owned(t):
    """t itself, or a copy of it where t is a view into a larger tensor: the fused q|k|v projection
    hands back k and v as slices of one (B, L, (H + 2 H_kv) Dh) output, and a cache keeping such a
    slice would keep the whole output (queries included) alive until the next step."""
    return t if t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone()


class LayerCache:
    """Keys and values of one attention layer: (B, H_kv, T, Dh) each, grown along T."""

    def __init__(self):
        self.k = None
        self.v = None

    def update(self, k, v):  # (B, H_kv, L_new, Dh) -> (B, H_kv, T + L_new, Dh)
        if self.k is None:
            self.k, self.v = owned(k), owned(v)
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
    the whole prefix (gpt-fast's static cache). max_len = prompt length + `room`.

    The buffers are made at the first decode step, not at the prefill: the prompt's k, v are kept as
    they come, then copied in. Made at the prefill, every layer's buffer for the `room` positions not
    written yet would be held while the prefill's activations peak, a peak above what a growing
    cache needs (measured by minivlm/bench/memory.py); made here, the copy costs one layer's prompt
    at a time.

    For a compiled decode step (minivlm/fast/compiled.py) `slot` is set to a (1,) tensor: the new
    position is written there and the *whole* buffer comes back, so every step has the same shapes;
    the caller's mask hides the slots not written yet.
    """

    def __init__(self, room):
        self.room = room
        self.k = self.v = None
        self.length = 0
        self.slot = None
        self.buffered = False  # False: k, v are the prompt's own tensors

    def allocate(self):  # the prompt's k, v (B, H_kv, L, Dh) -> buffers (B, H_kv, L + room, Dh) holding them
        if self.buffered or self.k is None:
            return
        b, h, n, d = self.k.shape
        k, v = self.k.new_zeros(b, h, n + self.room, d), self.v.new_zeros(b, h, n + self.room, d)
        k[:, :, :n], v[:, :, :n] = self.k, self.v
        self.k, self.v, self.buffered = k, v, True

    def update(self, k, v):  # (B, H_kv, L_new, Dh) -> (B, H_kv, length + L_new, Dh) views
        if self.slot is not None:  # compiled step: fixed shapes, position given as a tensor
            self.k.index_copy_(2, self.slot, k)
            self.v.index_copy_(2, self.slot, v)
            return self.k, self.v
        if self.k is None:  # the prompt
            self.k, self.v, self.length = owned(k), owned(v), k.shape[2]
            return self.k, self.v
        self.allocate()
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

    def allocate(self):
        """Make every layer's buffers now (a compiled step needs them before its first call)."""
        for layer in self.layers:
            layer.allocate()

    def reorder(self, index):
        """Keep only the batch rows in `index`."""
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[index], layer.v[index]
