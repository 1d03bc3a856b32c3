"""Data-parallel training with PyTorch's own DistributedDataParallel, launched by torchrun.

    torchrun --nproc_per_node 2 -m minivlm train clip ...      # 2 processes ("ranks"), one model each

torchrun starts N copies of the program and gives each RANK, LOCAL_RANK, WORLD_SIZE and the address of
a rendezvous in its environment. `init_from_env` joins them into one process group (gloo on CPU,
nccl on GPUs). Each rank then computes gradients on its own share of the batches; DDP's backward
averages them across ranks (an all-reduce, overlapped with the backward pass), so every rank applies
the same update and the copies of the model stay equal. Nothing here replaces DDP: it only starts the
group, wraps the model, and answers "am I rank 0?" for logging and saving.

Without torchrun (no WORLD_SIZE, or WORLD_SIZE=1) every function here is a no-op for one process.
"""
import os

import torch
import torch.distributed as dist


def active():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if active() else 0


def world_size():
    return dist.get_world_size() if active() else 1


def is_main():
    """Rank 0 logs, draws the progress bar and writes files; the others only compute."""
    return rank() == 0


def barrier():
    if active():
        dist.barrier()


def init_from_env(device="cpu"):
    """Join the process group torchrun describes in the environment; returns the device this rank
    should use ("cuda:<LOCAL_RANK>" on GPUs, else `device`). One process (no WORLD_SIZE): nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or active():
        return device
    cuda = str(device).startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def shutdown():
    if active():
        dist.destroy_process_group()


def all_reduce_sum(values, device="cpu"):
    """[float, ...] summed over the ranks (float64, so the sums of counts stay exact)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if active():
        dist.all_reduce(t)
    return t.tolist()


class DDP(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that also answers the wrapped model's attributes (model.config,
    model.logit_scale ...), so a recipe's loss_fn(model, batch) runs unchanged under torchrun. Its
    forward (model(...)) is what synchronises gradients: a loss_fn must call the model, not only its
    parts — `check_in_sync` catches one that does not."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model, device, find_unused_parameters=False):
    device_ids = [torch.device(device).index] if str(device).startswith("cuda") else None
    return DDP(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def check_in_sync(model):
    """After a synchronised backward every rank holds the same gradients; refuse to go on when they
    differ (a loss_fn that bypassed the DDP forward would otherwise train N diverging models)."""
    if not active():
        return
    total = sum(float(p.grad.double().sum()) for p in model.parameters() if p.grad is not None)
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, total)
    if max(gathered) - min(gathered) > 1e-6 * max(1.0, max(abs(g) for g in gathered)):
        raise RuntimeError(f"the ranks' gradients differ after backward (sums {gathered}): the loss_fn must call "
                           f"model(...) itself (DDP's forward), not model.submodule(...), so DDP can average them")
