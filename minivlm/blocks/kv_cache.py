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
