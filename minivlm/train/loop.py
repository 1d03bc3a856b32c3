"""One training loop for every model of minivlm: AdamW, warmup + cosine, gradient clipping, a
progress bar and a loss history.

A recipe (dual_encoder.py for CLIP/SigLIP; BLIP and LLaVA bring their own) supplies three things:

    model      an nn.Module
    batches    an iterator of batches (dicts / lists / tensors; moved to the device here)
    loss_fn    loss_fn(model, batch) -> loss, or (loss, {"name": float, ...}) to log more

    history = train(model, batches, loss_fn, TrainConfig(steps=600, lr=1e-3))
    history.losses        # one float per step
    save_loss_curve(history, "runs/clip/loss.png")   # plot.py

Beyond one process and one batch (all off by default, and then the loop is the plain one):
grad_accum + loss_weight (micro-batches counted by their tokens), precision="bf16" (autocast),
save_every / resume (checkpointing.py), and DDP under torchrun (distributed.py, batches.py).
"""
import json
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpointing, distributed
from .batches import BatchStream
from .progress import ProgressBar
from .schedule import warmup_cosine

PRECISIONS = ("fp32", "bf16")


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
    # Bigger batches than fit: K micro-batches (each one batch of the iterator) per update.
    grad_accum: int = 1
    # How much a micro-batch counts in the update: loss_weight(batch) -> its number of trained tokens
    # (trained_tokens) makes K micro-batches of a token-mean loss one update over all their tokens,
    # exactly as one K-times larger batch. None: every micro-batch counts the same.
    loss_weight: object = None
    precision: str = "fp32"             # "bf16": the forward under torch.autocast (weights stay fp32)
    # Checkpoints: every save_every steps (and at the end) into checkpoint_dir/<desc>/step-N, the
    # newest `keep` kept; resume=True continues from the newest there (checkpointing.py).
    checkpoint_dir: str | None = None
    save_every: int | None = None
    keep: int = 3
    resume: bool = False
    generators: tuple = ()              # torch.Generators the loss_fn draws from, saved with the RNGs
    find_unused_parameters: bool = False  # DDP: parameters the forward may leave without a gradient

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be at least 1, got {self.grad_accum}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r} (fp16 would need "
                             f"loss scaling; bf16 has fp32's range and needs none)")
        if self.save_every is not None and self.save_every < 1:
            raise ValueError(f"save_every must be at least 1, got {self.save_every}")
        if (self.save_every or self.resume) and self.checkpoint_dir is None:
            raise ValueError("save_every / resume need a checkpoint_dir")

    @property
    def warmup_steps(self):
        return min(self.steps, int(self.warmup * self.steps) if self.warmup < 1 else int(self.warmup))

    @property
    def run_dir(self):
        """Where this loop's checkpoints and log go: one folder per desc, so the stages of a recipe
        (LLaVA's text LM, stage 1, stage 2) each resume on their own."""
        if self.checkpoint_dir is None:
            return None
        return Path(self.checkpoint_dir) / (re.sub(r"[^a-z0-9]+", "-", self.desc.lower()).strip("-") or "train")


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


def options_from_args(args):
    """The loop options of `python -m minivlm train` (commands/train.py) as TrainConfig fields: only
    those the user set, so a plain command trains exactly as the recipe always did."""
    options = {}
    if getattr(args, "grad_accum", 1) != 1:
        options["grad_accum"] = args.grad_accum
    if getattr(args, "precision", "fp32") != "fp32":
        options["precision"] = args.precision
    if getattr(args, "save_every", None) or getattr(args, "resume", None):
        options.update(checkpoint_dir=str(Path(args.out) / "checkpoints"), save_every=args.save_every,
                       keep=getattr(args, "keep", 3), resume=bool(getattr(args, "resume", None)))
    return options


def trained_tokens(batch):
    """The tokens a causal-LM batch trains on: labels other than -100 after the one-place shift. As a
    loss_weight it makes accumulated / data-parallel micro-batches average over tokens, as one batch."""
    return float((batch["labels"][:, 1:] != -100).sum())


def batch_tokens(batch):
    """Tokens a batch reads (attention mask, else input_ids), for the progress bar's tokens/s; 0 if none."""
    if isinstance(batch, dict):
        if torch.is_tensor(batch.get("attention_mask")):
            return int(batch["attention_mask"].sum())
        if torch.is_tensor(batch.get("input_ids")):
            return batch["input_ids"].numel()
    return 0


def train(model, batches, loss_fn, config: TrainConfig, after_step=None):
    """Run config.steps optimisation steps; returns a History. after_step(model, step) runs after each
    update (e.g. CLIP clamps its temperature there). The model is left in train() mode.

    Under torchrun (distributed.init_from_env called) the model is wrapped in DDP and loss_fn receives
    the wrapper; each rank trains on its own micro-batches (BatchStream) and only rank 0 draws the
    progress bar, writes the log and the checkpoint's model state."""
    model.to(config.device).train()
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas)
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, config.steps, warmup, config.min_lr_ratio))
    history = History()
    world, main = distributed.world_size(), distributed.is_main()
    net = distributed.wrap(model, config.device, config.find_unused_parameters) if world > 1 else model
    stream = BatchStream(batches, config.grad_accum, world, distributed.rank())
    folder, first = config.run_dir, 0
    if config.resume and checkpointing.latest(folder) is not None:
        first, history = _resume(checkpointing.latest(folder), model, optimizer, scheduler, config, stream)
    log = _Log(folder / "log.jsonl", history) if folder is not None and main else None
    autocast = (torch.autocast(torch.device(config.device).type, dtype=torch.bfloat16)
                if config.precision == "bf16" else nullcontext())
    bar = ProgressBar(config.steps, desc=config.desc, initial=first) if config.progress and main else None
    start, tokens = time.time(), 0
    began = start  # tokens/s over this process's whole run (start is reset after each checkpoint write)
    for step in range(first, config.steps):
        micro = stream.take(step, config.steps)
        weights = [float(config.loss_weight(b)) if config.loss_weight else 1.0 for b in micro]
        counts = [sum(weights), sum(batch_tokens(b) for b in micro)]
        total, step_tokens = distributed.all_reduce_sum(counts) if world > 1 else counts
        if total <= 0:
            raise ValueError(f"step {step}: the micro-batches' loss weights sum to {total}; nothing to train on")
        optimizer.zero_grad(set_to_none=True)
        losses, step_metrics = _backward(net, loss_fn, micro, weights, total, world, autocast, config.device, step)
        if world > 1 and step == first:
            distributed.check_in_sync(model)
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        history.lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step(model, step)
        if len(losses) == 1 and world == 1:
            history.losses.append(losses[0])
        else:  # the weighted mean over every rank's micro-batches: the loss of the whole update
            local = sum(w * x for w, x in zip(weights, losses))
            history.losses.append((distributed.all_reduce_sum([local])[0] if world > 1 else local) / total)
        for name, values in step_metrics.items():  # this rank's mean over its micro-batches
            history.metrics.setdefault(name, []).append(sum(values) / len(values))
        tokens += step_tokens
        shown = {k: v[-1] for k, v in history.metrics.items()}
        if tokens:
            shown["tok/s"] = tokens / max(time.time() - began, 1e-9)
        if log:
            log.write(step, history, shown.get("tok/s"))
        if bar:
            bar.update(step + 1, loss=history.losses[-1], lr=history.lrs[-1], **shown)
        done = step + 1
        if config.save_every and (done % config.save_every == 0 or done == config.steps):
            history.seconds += time.time() - start
            start = time.time()
            checkpointing.save(folder, done, dict(
                step=done, steps=config.steps, micro_per_step=config.grad_accum * world, model=model.state_dict(),
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), history=history.as_dict()),
                config.generators, config.keep)
    if bar:
        bar.close()
    if log:
        log.file.close()
    history.seconds += time.time() - start
    if config.progress and main and len(history.losses) >= 2:
        n = max(1, min(10, len(history.losses) // 2))
        print(f"{config.desc}: {config.steps} steps in {history.seconds:.1f}s, loss {history.mean_loss(first=n):.4g} "
              f"-> {history.mean_loss(last=n):.4g} (mean of the first / last {n})", file=bar.stream if bar else None,
              flush=True)
    return history


def _backward(net, loss_fn, micro, weights, total, world, autocast, device, step):
    """Forward + backward of this rank's micro-batches, gradients summed in .grad; returns their losses
    and metrics. DDP averages gradients over the W ranks at the last micro-batch's backward only
    (no_sync before it): scaling each loss by W * weight / total makes that average the weighted mean
    over all ranks' micro-batches, the gradient of one big batch."""
    losses, metrics_seen = [], {}
    for m, (batch, weight) in enumerate(zip(micro, weights)):
        with net.no_sync() if world > 1 and m < len(micro) - 1 else nullcontext():
            with autocast:
                out = loss_fn(net, to_device(batch, device))
            loss, metrics = out if isinstance(out, tuple) else (out, {})
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss.item()} at step {step}; lower the learning rate")
            scale = world * weight / total
            (loss if scale == 1.0 else loss * scale).backward()  # one process, one batch: the plain loss
        losses.append(loss.item())
        for name, value in metrics.items():
            metrics_seen.setdefault(name, []).append(float(value))
    return losses, metrics_seen


def _resume(path, model, optimizer, scheduler, config, stream):
    """Load checkpoint `path` into the run; returns (steps done, history). The data stream is moved
    past the batches already trained on BEFORE the random states are restored, so that a replayed
    iterator's own draws cannot shift them."""
    state, rng = checkpointing.load(path)
    micro = config.grad_accum * distributed.world_size()
    if state["steps"] != config.steps or state["micro_per_step"] != micro:
        raise checkpointing.CheckpointError(
            f"checkpoint {path} belongs to a run of {state['steps']} steps x {state['micro_per_step']} micro-batches "
            f"per step (grad_accum x ranks); this run has {config.steps} x {micro}: its schedule and data order "
            f"would differ. Resume with the run's own settings (--steps {state['steps']} and --grad-accum x ranks = "
            f"{state['micro_per_step']}), or start a new run in another folder")
    if distributed.is_main() and config.progress:
        print(f"{config.desc}: resuming from step {state['step']} of {config.steps} (checkpoint {path})",
              file=sys.stderr, flush=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    stream.skip(state["step"], config.steps)
    checkpointing.set_rng_state(rng, config.generators)
    return state["step"], History(**state["history"])


class _Log:
    """log.jsonl in the run's folder: one line per step (loss, lr, metrics), flushed as it goes, so a
    killed run's curve survives; a resumed run rewrites it from the checkpoint's history first."""

    def __init__(self, path, history):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w")
        for step in range(len(history.losses)):
            self.write(step, history)

    def write(self, step, history, tokens_per_s=None):
        line = dict(step=step + 1, loss=history.losses[step], lr=history.lrs[step],
                    **{k: v[step] for k, v in history.metrics.items()})
        if tokens_per_s is not None:
            line["tokens_per_s"] = round(tokens_per_s, 1)
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()


__all__ = ["TrainConfig", "History", "train", "options_from_args", "to_device", "param_groups", "trained_tokens"]
