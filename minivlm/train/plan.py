"""How many bytes a training run holds per rank: planned before a run starts, and measured.

    python -m minivlm train llava --from llava-1.5-7b-hf --stage 2 --plan --ranks 8 --strategy fsdp \
        --precision bf16 --batch-size 4 --seq-len 2048 --gpu-memory 24

builds the model of --from on the meta device (config.json only, no weights read), sets what the stage
and LoRA train, and prints bytes per rank for the weights, gradients, AdamW state, the FSDP unit being
gathered, and the activations (counted from the decoder layer's ops, layer_activation_values).

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
        # an output on an input's storage (a view such as weight.t(), an in-place op) is no new memory
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                if storage.data_ptr() not in inputs:
                    self._track(storage)
        return out

    def _track(self, storage):
        key = storage.data_ptr()
        if key and key not in self.live:  # a storage already counted
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)

    def _free(self, key):
        self.current -= self.live.pop(key, 0)


# --- the plan: bytes per rank before a run starts ------------------------------------------------------

GB = 1024 ** 3


def layer_activation_bytes(cfg, precision="fp32") -> float:
    """Bytes a LLaMA decoder layer keeps per token from its forward to its backward (all of it trained).

    fp32, counted from text/llama.py's ops and measured equal by PeakMemory (tests/test_plan.py): the
    layer input, the first norm's x / rsqrt product and output, q and k after RoPE, v, sdpa's output,
    o_proj's contiguous input, the residual and the second norm's two (8 of width D, 2 of the kv width),
    and the MLP's gate, up, act(gate), act(gate) * up (4 of the intermediate width).
    bf16 autocast keeps the norms' fp32 copies next to the bf16 casts of every matmul input, and the
    residual stream stays fp32 (x + f(x) promotes, as standard autocast does): measured (same test)
    16 D + 2.5 kv + 4.75 I values of 2 bytes, 0.6-0.7x of fp32 rather than 0.5x."""
    d, kv, i = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim, cfg.intermediate_size
    if precision == "bf16":
        return 2 * (16 * d + 2.5 * kv + 4.75 * i)
    return 4 * (8 * d + 2 * kv + 4 * i)


def activation_bytes(model, batch_size: int, seq_len: int, precision="fp32", checkpointing=False) -> int:
    """Bytes of activations kept from the forward to the backward of one micro-batch of a LLaVA or a
    LLaMA LM, counted as if the whole LM trains (a frozen LM keeps less: an upper bound there). The
    frozen vision tower keeps none (nothing before it needs a gradient). Checkpointing keeps each
    layer's input only, plus one layer's worth while that layer is recomputed."""
    lm = getattr(model, "language_model", model)
    cfg = lm.config
    act = 2 if precision == "bf16" else 4
    per_layer = layer_activation_bytes(cfg, precision)
    n = cfg.num_hidden_layers
    layers = n * cfg.hidden_size * act + per_layer if checkpointing else n * per_layer
    # embeddings out, the final norm's input and output; the fp32 logits and log_softmax of the loss
    ends = 3 * cfg.hidden_size * act + 2 * cfg.vocab_size * 4
    projector = 0
    if hasattr(model, "multi_modal_projector") and any(p.requires_grad for p in model.multi_modal_projector.parameters()):
        v = model.config.vision_config.hidden_size
        projector = (v + 2 * cfg.hidden_size) * act * batch_size * model.config.features_per_image
    return int(batch_size * seq_len * (layers + ends) + projector)


def parameter_bytes(model) -> tuple[int, int, int]:
    """(all parameters, trainable parameters, the largest sharding unit's parameters), in elements."""
    from .fsdp import sharding_units
    unit = max((sum(p.numel() for p in u.parameters()) for u in sharding_units(model)), default=0)
    return (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad),
            unit)


def plan(model, ranks: int = 1, strategy="ddp", precision="fp32", batch_size=1, seq_len=2048,
         checkpointing=False) -> dict:
    """Bytes per rank of a run training `model` (its requires_grad flags set as the stage / LoRA set
    them; the model may be on the meta device). fp32 master weights, fp32 grads, AdamW's two fp32
    moments per trainable parameter; under FSDP each divided by the ranks, plus the gathered unit
    (bf16 under --precision bf16) twice over (the one running and the one prefetched)."""
    total, trainable, unit = parameter_bytes(model)
    shards = ranks if strategy == "fsdp" else 1
    out = dict(weights=4 * total // shards, grads=4 * trainable // shards, optimizer=8 * trainable // shards,
               gathered=2 * unit * (2 if precision == "bf16" else 4) if strategy == "fsdp" and ranks > 1 else 0,
               activations=activation_bytes(model, batch_size, seq_len, precision, checkpointing))
    out["total"] = sum(out.values())
    return out


def measure(model, batch, loss_fn, precision="fp32") -> dict:
    """What one training step holds, measured on this process (CPU is fine): the weights, then the
    activations alive after the forward (PeakMemory), the gradients and AdamW's state after the step."""
    from .fsdp import training_state_bytes
    from .loop import param_groups
    optimizer = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-5)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with PeakMemory() as memory:
        with autocast:
            loss = loss_fn(model, batch)
        activations = memory.current
        loss.backward()
        optimizer.step()
    out = training_state_bytes(model.parameters(), optimizer)
    out["activations"] = activations
    out["peak"] = memory.peak
    return out


def table(planned: dict, measured: dict | None = None, gpu_memory_gb: float | None = None) -> str:
    rows = ["part          planned" + ("    measured" if measured else "")]
    for part in ("weights", "grads", "optimizer", "gathered", "activations", "total"):
        line = f"{part:<12} {planned[part] / GB:8.2f} GB"
        if measured and part in measured:
            line += f" {measured[part] / GB:8.2f} GB"
        rows.append(line)
    if gpu_memory_gb:
        fits = planned["total"] <= 0.9 * gpu_memory_gb * GB  # ~10% for the allocator, kernels, buffers
        rows.append(f"fits {gpu_memory_gb:g} GB: {'yes' if fits else 'NO'} ({planned['total'] / GB:.1f} GB planned, "
                    f"{0.9 * gpu_memory_gb:.1f} GB usable)")
    return "\n".join(rows)


def run_plan(args) -> dict:
    """`train llava --from DIR --plan`: the model of DIR's config.json on the meta device (no weights
    read), the stage's and LoRA's trainable parts, then the plan printed as a table."""
    import os

    from weights_convert.checkpoint import read_config
    from weights_convert.load import empty_model
    from weights_convert.registry import family_for

    from ..models.llava import freeze
    if not args.from_dir:
        raise SystemExit("--plan needs --from DIR: the model (its config.json) to plan for")
    config = read_config(args.from_dir)
    model = empty_model(family_for(config, args.from_dir), config)
    freeze(model, args.stage)
    if args.lora_rank:
        from .lora import apply_lora, parse_targets
        apply_lora(model, args.lora_rank, args.lora_alpha, parse_targets(args.lora_targets))
    ranks = args.ranks or int(os.environ.get("WORLD_SIZE", "1"))
    planned = plan(model, ranks, args.strategy, args.precision, args.batch_size or 1, args.seq_len,
                   args.activation_checkpointing)
    print(f"{args.from_dir}: stage {args.stage}, {ranks} rank(s) {args.strategy}, {args.precision}, batch "
          f"{args.batch_size or 1} x {args.seq_len} tokens" + (f", LoRA r={args.lora_rank}" if args.lora_rank else "")
          + (", activation checkpointing" if args.activation_checkpointing else "") + "; per rank:")
    print(table(planned, gpu_memory_gb=args.gpu_memory), flush=True)
    return dict(planned, fits=None if not args.gpu_memory else planned["total"] <= 0.9 * args.gpu_memory * GB)
