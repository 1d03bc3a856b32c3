"""Which batches each process trains on, in an order a resumed or a data-parallel run can reproduce.

A recipe gives the loop either an iterator of batches (a generator over the shapes world) or a
random-access source batch(g) -> the g-th batch (ShardedBatches, over a dataset). BatchStream hands
each rank its micro-batches of each step; ShardedBatches is DistributedSampler's rule over a dataset:
one seeded permutation per epoch, consecutive slices of it as consecutive batches, so the ranks of a
step read disjoint records and every record is read once per epoch.
"""
import torch


class BatchStream:
    """The micro-batches one rank trains on, in a fixed global order.

    Global micro-batch g = (step * K + m) * W + rank for micro-batch m of K, rank of W: the W ranks of
    one step together see the same K * W consecutive batches as one process with grad_accum K * W
    (DistributedSampler's "each rank its own shard", at batch granularity). `batches` is either an
    iterator (every rank draws every batch and keeps its own: simple, and exact for any generator) or
    a callable batch(g) (random access: each rank builds only its own, see ShardedBatches)."""

    def __init__(self, batches, accum=1, world=1, rank=0):
        self.random_access = callable(batches) and not hasattr(batches, "__next__")
        self.source = batches if self.random_access else iter(batches)
        self.accum, self.world, self.rank = accum, world, rank
        self.drawn = 0

    def _draw(self, wanted):
        try:
            batch = next(self.source)
        except StopIteration:
            raise ValueError(f"the batch iterator ran out after {self.drawn} batches; {wanted} were asked") from None
        self.drawn += 1
        return batch

    def skip(self, steps, total_steps):
        """Move past `steps` steps' batches (resume): an iterator replays them, random access jumps."""
        if not self.random_access:
            for _ in range(steps * self.accum * self.world):
                self._draw(total_steps * self.accum * self.world)

    def take(self, step, total_steps):
        """This rank's K micro-batches of `step`."""
        per_step = self.accum * self.world
        if self.random_access:
            return [self.source((step * self.accum + m) * self.world + self.rank) for m in range(self.accum)]
        drawn = [self._draw(total_steps * per_step) for _ in range(per_step)]
        return drawn[self.rank::self.world]


class ShardedBatches:
    """batch(g): the g-th batch of `batch_size` items of `dataset` (dataset[i] -> item), collated.

    Epoch e = g // (len(dataset) // batch_size) draws its order from torch.randperm seeded with
    seed + e (DistributedSampler's set_epoch); the last incomplete batch of an epoch is dropped
    (drop_last), so every batch has the same size. Random access: a resumed run jumps straight to its
    batch, and a rank builds only its own batches."""

    def __init__(self, dataset, collator, batch_size, seed=0):
        if len(dataset) < batch_size:
            raise ValueError(f"the dataset has {len(dataset)} item(s), fewer than one batch of {batch_size}")
        self.dataset, self.collator, self.batch_size, self.seed = dataset, collator, batch_size, seed
        self.per_epoch = len(dataset) // batch_size
        self._epoch, self._order = None, None

    def order(self, epoch):
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.dataset), generator=g).tolist()
        return self._order

    def indices(self, g):
        epoch, k = divmod(g, self.per_epoch)
        return self.order(epoch)[k * self.batch_size:(k + 1) * self.batch_size]

    def __call__(self, g):
        return self.collator([self.dataset[i] for i in self.indices(g)])
