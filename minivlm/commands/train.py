"""python -m minivlm train MODEL [--steps N] [--out DIR] [--seed S] [--device cpu|cuda] [loop options]

Trains a tiny model from scratch on the synthetic shapes world, saves it as a Hugging Face model
folder (weights_convert.load_pretrained reads it back) with its loss plot, and prints its figures.

Each model is one entry of TRAINERS: "module:function", called as function(args) -> dict of figures
(printed as JSON). A new recipe adds one line there, its defaults to DEFAULTS and what it does not
read to NOT_READ (an option a recipe would silently ignore is refused).

The loop options work for every recipe but blip2 (train/loop.py's TrainConfig):

    --save-every N --keep K     checkpoints in <out>/checkpoints/<stage>/step-N (the newest K kept)
    --resume DIR                continue the run saved in DIR (its --out) from its newest checkpoints,
                                with the run's own settings (train/settings.py)
    --grad-accum K              K micro-batches of --batch-size per update
    --precision bf16            autocast the forward to bfloat16
    torchrun --nproc_per_node N -m minivlm train ...    data-parallel (DDP), gloo on CPU, nccl on GPU
"""
import argparse
import importlib
import json
import os

from minivlm.errors import UsageError

TRAINERS = {
    "clip": "minivlm.train.dual_encoder:run",
    "siglip": "minivlm.train.dual_encoder:run",
    "blip": "minivlm.train.blip:run",
    "llava": "minivlm.train.llava:run",
    "blip2": "minivlm.train.blip2:run",
}
# The recipes' own steps and batch size (tests/test_cli.py checks them against the recipes' RECIPE
# dicts), so that help can show them and a run's settings hold numbers. llava/blip2: stage 2's steps.
DEFAULTS = {"clip": dict(steps=800, batch_size=32), "siglip": dict(steps=1200, batch_size=32),
            "blip": dict(steps=1000, batch_size=24), "llava": dict(steps=1000, batch_size=32),
            "blip2": dict(steps=400, batch_size=32)}
DATA_DEFAULTS = dict(steps=None, batch_size=8)   # llava --data: one epoch of the records, batches of 8
# Options a recipe does not read: given, they are refused rather than silently ignored.
DATA_OPTIONS = ("data", "images", "from_dir", "stage", "lr", "template", "on_bad_record")
LOOP_OPTIONS = ("batch_size", "grad_accum", "precision", "save_every", "keep", "resume")
NOT_READ = {"clip": DATA_OPTIONS, "siglip": DATA_OPTIONS, "blip": DATA_OPTIONS,
            "blip2": DATA_OPTIONS + LOOP_OPTIONS, "llava": DATA_OPTIONS[1:]}   # llava: unless --data is given


def noting_given(action_class):
    """argparse's action, which also notes that the user gave the option (args.given): a resumed run
    must tell `--seed 0` typed on the command line from the default seed 0."""
    class Given(action_class):
        def __call__(self, parser, namespace, values, option_string=None):
            super().__call__(parser, namespace, values, option_string)
            namespace.given = (getattr(namespace, "given", None) or set()) | {self.dest}
    return Given


def add_arguments(p):
    for name, action in ((None, argparse._StoreAction), ("store", argparse._StoreAction),
                         ("store_true", argparse._StoreTrueAction), ("store_false", argparse._StoreFalseAction)):
        p.register("action", name, noting_given(action))   # every option added below (and later) notes it
    steps = ", ".join(f"{m} {d['steps']}" for m, d in DEFAULTS.items())
    batches = ", ".join(f"{m} {d['batch_size']}" for m, d in DEFAULTS.items() if m != "blip2")
    p.add_argument("model", choices=sorted(TRAINERS), help=f"what to train: {', '.join(sorted(TRAINERS))}")
    p.add_argument("--steps", type=int, help=f"optimisation steps (default: the recipe's: {steps}; llava and blip2 "
                                             f"count stage 2; llava --data: one epoch)")
    p.add_argument("--out", metavar="DIR", help="where to save the run (default: runs/<model>)")
    p.add_argument("--seed", type=int, default=0, help="seeds the model's initialisation and the data order")
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"),
                   help="cpu or cuda (default: $MINIVLM_DEVICE, else cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch-size", type=int, help=f"batch size per process and micro-batch (default: the recipe's: "
                                                  f"{batches}; llava --data 8)")
    p.add_argument("--grad-accum", type=int, default=1, metavar="K", help="micro-batches per update")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast the forward")
    p.add_argument("--save-every", type=int, metavar="N", help="write a checkpoint every N steps (and at the end)")
    p.add_argument("--keep", type=int, default=3, metavar="K", help="checkpoints kept per stage (newest)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (its --out) from its newest checkpoints, "
                                                   "with that run's settings (steps, seed, batch size ...)")
    llava = p.add_argument_group("llava on your own data (LLaVA's JSON format)")
    llava.add_argument("--data", metavar="JSON", help="conversations.json / .jsonl in LLaVA's format")
    llava.add_argument("--images", metavar="DIR", help="the folder the records' 'image' paths are relative to "
                                                       "(default: the JSON's folder)")
    llava.add_argument("--from", dest="from_dir", metavar="DIR", help="a LLaVA folder load_pretrained reads")
    llava.add_argument("--stage", type=int, choices=(1, 2), default=2,
                       help="1: projector only (feature alignment); 2: projector + language model")
    llava.add_argument("--lr", type=float, help="with --data: learning rate (default: 2e-3 stage 1, 2e-5 stage 2)")
    llava.add_argument("--template", help="conversation template (default: plain for stage 1, vicuna_v1 for stage 2)")
    llava.add_argument("--on-bad-record", choices=("skip", "fail"), default="fail",
                       help="a record that cannot be trained on: skip it (reported and counted) or stop")


def check_options(args, given):
    """Refuse the options this recipe would not read, and numbers that cannot be right."""
    from minivlm.train.settings import flag
    unread = [k for k in NOT_READ[args.model] if k in given and not (args.model == "llava" and args.data)]
    if unread:
        what = ("options of `train llava --data`" if set(unread) <= set(DATA_OPTIONS)
                else "options this recipe does not read")
        raise UsageError(f"train {args.model} does not read {', '.join(flag(k) for k in unread)} ({what}): "
                         f"drop {'it' if len(unread) == 1 else 'them'}")
    for name in ("steps", "batch_size", "grad_accum", "save_every", "keep"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"{flag(name)} must be at least 1, got {value}")


def resume_settings(args, given):
    """Take the settings of the run in args.resume; refuse the given options that contradict them.
    Returns the run's settings, or None for a run that kept none."""
    from minivlm.train import settings
    if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
        raise UsageError(f"--resume {args.resume} continues that run in place; --out {args.out} differs: "
                         f"drop --out")
    if not os.path.isdir(os.path.join(args.resume, "checkpoints")):
        raise UsageError(f"--resume {args.resume}: no checkpoints folder there (was the run started with "
                         f"--save-every N --out {args.resume}?)")
    args.out = args.resume
    saved = settings.load(args.resume)
    if saved is None:  # a run from before settings were kept: the options given must match its checkpoints
        return None
    if saved.get("model", args.model) != args.model:
        raise UsageError(f"--resume {args.resume} holds a `train {saved['model']}` run, not `train {args.model}`")
    current = settings.of(args)
    bad = settings.conflicts(saved, current, given)
    if bad:
        listed = ", ".join(f"{settings.flag(k)} {new} (the run has {old})" for k, old, new in bad)
        raise UsageError(f"--resume {args.resume} continues its run with that run's settings; {listed} would train "
                         f"a different run: drop {'it' if len(bad) == 1 else 'them'}, or start a new run with "
                         f"another --out")
    for k, v in saved.items():
        if k not in given and hasattr(args, k):
            setattr(args, k, v)
    return saved


def fill_defaults(args):
    """The recipe's steps and batch size as numbers (None stays for llava --data's one epoch)."""
    defaults = DATA_DEFAULTS if args.model == "llava" and args.data else DEFAULTS[args.model]
    args.steps = args.steps or defaults["steps"]
    args.batch_size = args.batch_size or defaults["batch_size"]


def run(args):
    import torch

    from ..train import distributed, settings
    given = set(getattr(args, "given", None) or ())
    check_options(args, given)
    saved = resume_settings(args, given) if args.resume else None
    fill_defaults(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out = args.out or os.path.join("runs", args.model)
    args.device = distributed.init_from_env(args.device)
    main = distributed.is_main()
    if (args.save_every and not args.resume) or saved is not None:   # an old run's settings are unknown
        settings.save(args.out, settings.of(args))
    world = distributed.world_size()
    if main and (world > 1 or args.grad_accum > 1) and args.model != "blip2":
        print(f"{world} rank(s) x {args.grad_accum} accumulation x batch {args.batch_size} = "
              f"{world * args.grad_accum * args.batch_size} examples per update", flush=True)
    module, function = TRAINERS[args.model].split(":")
    try:
        result = getattr(importlib.import_module(module), function)(args)
    finally:
        distributed.shutdown()
    if main:
        print(json.dumps(result, indent=2))
    return 0
