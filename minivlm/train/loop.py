"""One training loop for every model of minivlm: AdamW, warmup + cosine, gradient clipping, a
progress bar and a loss history.

A recipe (dual_encoder.py for CLIP/SigLIP; BLIP and LLaVA bring their own) supplies three things:

    model      an nn.Module
    batches    an iterator of batches (dicts / lists / tensors; moved to the device here)
    loss_fn    loss_fn(model, batch) -> loss, or (loss, {"name": float, ...}) to log more

    history = train(model, batches, loss_fn, TrainConfig(steps=600, lr=1e-3))
    history.losses        # one float per step
    save_loss_curve(history, "runs/clip/loss.png")   # plot.py
"""
import time
from dataclasses import dataclass, field

import torch

from .progress import ProgressBar
from .schedule import warmup_cosine


@dataclass
class TrainConfig:
    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.01          # on matrices only (see param_groups)
    warmup: float = 0.05                # a fraction of the steps (< 1) or a number of steps (>= 1)
    min_lr_ratio: float = 0.05          # the cosine ends at lr * min_lr_ratio
    betas: tuple = (0.9, 0.98)          # beta2 0.98: CLIP's choice for stability with large updates
    grad_clip: float | None = 1.0       # max global grad norm; None: off
    device: str = "cpu"
    progress: bool = True
    desc: str = "train"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    @property
    def warmup_steps(self):
        return min(self.steps, int(self.warmup * self.steps) if self.warmup < 1 else int(self.warmup))


@dataclass
class History:
    losses: list = field(default_factory=list)    # one per step
    lrs: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)   # name -> list, one per step
    seconds: float = 0.0

    def mean_loss(self, first=None, last=None):
        """Mean loss over the first or the last n steps (a single step's loss is noisy)."""
        values = self.losses[:first] if first else self.losses[-last:] if last else self.losses
        return sum(values) / len(values)

    def as_dict(self):
        return dict(losses=self.losses, lrs=self.lrs, metrics=self.metrics, seconds=self.seconds)


def to_device(batch, device):
    """Tensors inside dicts / lists / tuples -> device; anything else unchanged."""
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def param_groups(model, weight_decay):
    """Weight decay on weight matrices only: decaying norms' gains, biases or a temperature toward
    zero is not regularisation, just damage (the usual GPT/CLIP practice)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def train(model, batches, loss_fn, config: TrainConfig, after_step=None):
    """Run config.steps optimisation steps; returns a History. after_step(model, step) runs after each
    update (e.g. CLIP clamps its temperature there). The model is left in train() mode."""
    model.to(config.device).train()
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas)
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, config.steps, warmup, config.min_lr_ratio))
    history = History()
    bar = ProgressBar(config.steps, desc=config.desc) if config.progress else None
    start = time.time()
    batches = iter(batches)
    for step in range(config.steps):
        try:
            batch = next(batches)
        except StopIteration:
            raise ValueError(f"the batch iterator ran out after {step} batches; {config.steps} steps were asked")
        out = loss_fn(model, to_device(batch, config.device))
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        history.lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step(model, step)
        history.losses.append(loss.item())
        for name, value in metrics.items():
            history.metrics.setdefault(name, []).append(float(value))
        if bar:
            bar.update(step + 1, loss=history.losses[-1], lr=history.lrs[-1], **{k: float(v) for k, v in metrics.items()})
    if bar:
        bar.close()
    history.seconds = time.time() - start
    return history


__all__ = ["TrainConfig", "History", "train", "to_device", "param_groups"]
