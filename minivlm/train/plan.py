"""How many bytes a training run holds per rank: measured (PeakMemory) and, before a run, planned.

PeakMemory counts, while it is on, every tensor storage an op creates (forward activations, the
gradients, AdamW's moments, temporaries) and when it is freed: `peak` is the most that was alive at
once. It works on any device, the CPU included, where torch keeps no allocator statistics; tensors
that existed before (the weights) are not counted.
"""
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakMemory(TorchDispatchMode):
    """with PeakMemory() as m: loss.backward()  ->  m.peak, m.current (bytes of storages ops created)."""

    def __init__(self):
        super().__init__()
        self.live = {}  # storage data_ptr -> bytes
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._track(t.untyped_storage())
        return out

    def _track(self, storage):
        key = storage.data_ptr()
        if key and key not in self.live:  # a view or an in-place op's output: a storage already counted
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)

    def _free(self, key):
        self.current -= self.live.pop(key, 0)
