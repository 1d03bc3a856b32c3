"""python -m minivlm train MODEL [--steps N] [--out DIR] [--seed S] [--device cpu|cuda] [loop options]

Trains a tiny model from scratch on the synthetic shapes world, saves it as a Hugging Face model
folder (weights_convert.load_pretrained reads it back) with its loss plot, and prints its figures.

Each model is one entry of TRAINERS: "module:function", called as function(args) -> dict of figures
(printed as JSON). A new recipe adds one line there.

The loop options work for every recipe (train/loop.py's TrainConfig):

    --save-every N --keep K     checkpoints in <out>/checkpoints/<stage>/step-N (the newest K kept)
    --resume DIR                continue the run saved in DIR (its --out) from its newest checkpoints
    --grad-accum K              K micro-batches of --batch-size per update
    --precision bf16            autocast the forward to bfloat16
    torchrun --nproc_per_node N -m minivlm train ...    data-parallel (DDP), gloo on CPU, nccl on GPU
    --strategy fsdp             under torchrun: shard weights, grads and optimizer state (FSDP2)
    --activation-checkpointing  recompute each decoder layer / tower block in backward
"""
import importlib
import json
import os

TRAINERS = {
    "clip": "minivlm.train.dual_encoder:run",
    "siglip": "minivlm.train.dual_encoder:run",
    "blip": "minivlm.train.blip:run",
    "llava": "minivlm.train.llava:run",
    "blip2": "minivlm.train.blip2:run",
}


def add_arguments(p):
    p.add_argument("model", choices=sorted(TRAINERS), help="what to train")
    p.add_argument("--steps", type=int, help="optimisation steps (default: the recipe's)")
    p.add_argument("--out", metavar="DIR", help="where to save the run (default: runs/<model>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch-size", type=int, help="batch size per process and micro-batch (default: the recipe's)")
    p.add_argument("--grad-accum", type=int, default=1, metavar="K", help="micro-batches per update")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast the forward")
    p.add_argument("--save-every", type=int, metavar="N", help="write a checkpoint every N steps (and at the end)")
    p.add_argument("--keep", type=int, default=3, metavar="K", help="checkpoints kept per stage (newest)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (its --out) from its newest checkpoints")
    p.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp",
                   help="under torchrun: ddp replicates the model on every rank, fsdp shards weights, gradients "
                        "and optimizer state across them (train/fsdp.py)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each layer's activations in backward: less memory, ~1/3 more compute")
    llava = p.add_argument_group("llava on your own data (LLaVA's JSON format)")
    llava.add_argument("--data", metavar="JSON", help="conversations.json / .jsonl in LLaVA's format")
    llava.add_argument("--images", metavar="DIR", help="the folder the records' 'image' paths are relative to")
    llava.add_argument("--from", dest="from_dir", metavar="DIR", help="a LLaVA folder load_pretrained reads")
    llava.add_argument("--stage", type=int, choices=(1, 2), default=2,
                       help="1: projector only (feature alignment); 2: projector + language model")
    llava.add_argument("--lr", type=float, help="with --data: learning rate (default: 2e-3 stage 1, 2e-5 stage 2)")
    llava.add_argument("--template", help="conversation template (default: plain for stage 1, vicuna_v1 for stage 2)")
    llava.add_argument("--lora-rank", type=int, metavar="R", help="stage 2: train LoRA adapters of rank R on the LM "
                       "instead of the LM (the run folder is a PEFT adapter folder)")
    llava.add_argument("--lora-alpha", type=float, metavar="A", help="LoRA scaling alpha (update * A / R; default 2R)")
    llava.add_argument("--lora-targets", metavar="NAMES", help="comma-separated Linear names to adapt "
                       "(default q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj)")
    llava.add_argument("--merge", action="store_true", help="with --lora-rank: save the merged full model instead")
    llava.add_argument("--plan", action="store_true", help="with --from: print the bytes per rank this run "
                       "would hold (weights, grads, optimizer, activations) and whether they fit; train nothing")
    llava.add_argument("--ranks", type=int, help="--plan: the number of ranks (default: WORLD_SIZE or 1)")
    llava.add_argument("--seq-len", type=int, default=2048, help="--plan: tokens per sequence")
    llava.add_argument("--gpu-memory", type=float, metavar="GB", help="--plan: one GPU's memory, to say if it fits")
    llava.add_argument("--on-bad-record", choices=("skip", "fail"), default="fail",
                       help="a record that cannot be trained on: skip it (reported and counted) or stop")


def run(args):
    import torch

    from ..train import distributed
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume:
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise SystemExit(f"--resume {args.resume} continues that run in place; --out {args.out} differs")
        args.out = args.resume
        if not os.path.isdir(os.path.join(args.resume, "checkpoints")):
            raise SystemExit(f"--resume {args.resume}: no checkpoints folder there (was the run started with "
                             f"--save-every N --out {args.resume}?)")
    args.out = args.out or os.path.join("runs", args.model)
    args.device = distributed.init_from_env(args.device)
    module, function = TRAINERS[args.model].split(":")
    main = distributed.is_main()
    try:
        result = getattr(importlib.import_module(module), function)(args)
    finally:
        distributed.shutdown()
    if main:
        print(json.dumps(result, indent=2))
    return 0
