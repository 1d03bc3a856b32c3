"""python -m minivlm train MODEL [--steps N] [--out DIR] [--seed S] [--device cpu|cuda]

Trains a tiny model from scratch on the synthetic shapes world, saves it as a Hugging Face model
folder (weights_convert.load_pretrained reads it back) with its loss plot, and prints its figures.

Each model is one entry of TRAINERS: "module:function", called as function(args) -> dict of figures
(printed as JSON). A new recipe adds one line there.
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


def run(args):
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out = args.out or os.path.join("runs", args.model)
    module, function = TRAINERS[args.model].split(":")
    result = getattr(importlib.import_module(module), function)(args)
    print(json.dumps(result, indent=2))
    return 0
