"""Learning-rate schedule: linear warmup, then a cosine decay to a floor (Loshchilov & Hutter 2017).

Warmup matters for transformers trained with Adam from scratch: the first updates, made with
poorly estimated second moments, would otherwise be the largest.
"""
import math


def warmup_cosine(step, total_steps, warmup_steps, min_ratio=0.0):
    """The multiplier of the base learning rate at `step` (0-based): 0 -> 1 over the warmup,
    then 1 -> min_ratio along half a cosine until total_steps."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(progress, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
