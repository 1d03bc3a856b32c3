"""The trace command's one tail, for every family: pick the model, load ours and transformers', run
the family's trace and its reference, compare, print the table, the answer and the verdict, draw.

    model     --checkpoint DIR's config.json decides; else --model NAME (trace/families.py)
    weights   the checkpoint; else the family's shipped trained model (minivlm/pretrained/) unless
              --random; else its seeded tiny default, built in a scratch folder (trace/tiny.py)
"""
import json
import tempfile
import time
from pathlib import Path

import torch

from ..errors import UsageError
from .families import family, model_of_config
from .plot import plot_stages
from .stage import compare, format_stages, worst_diff
from .tiny import load_default, load_folder

TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


def choose_model(args) -> str:
    """The --model name: a checkpoint's config.json architecture, else --model."""
    if args.checkpoint:
        path = Path(args.checkpoint) / "config.json"
        if not path.is_file():
            raise UsageError(f"no config.json in {args.checkpoint} (--checkpoint expects an HF model folder)")
        return model_of_config(json.loads(path.read_text()), args.checkpoint)
    return args.model


def trace(args, with_reference: bool, scratch: str):
    """(stages, header line, sample, reference model or None) for the parsed command-line arguments."""
    from .. import pretrained
    model = choose_model(args)
    module, variant = family(model)
    title = module.TITLE[variant] if isinstance(module.TITLE, dict) else module.TITLE
    dtype = getattr(torch, args.dtype)
    shipped = module.SHIPPED.get(variant) if not (args.random or args.checkpoint) else None
    if args.checkpoint or shipped:
        folder = args.checkpoint or pretrained.path(shipped)
        loaded = load_folder(folder, dtype, args.device, with_reference, variant)
        source = (f"checkpoint {folder}" if args.checkpoint else
                  f"{shipped}, the tiny {title} trained on the shapes world (minivlm/pretrained/{shipped})")
    else:
        loaded = load_default(model, scratch, args.seed, with_reference)
        loaded.ours = loaded.ours.to(args.device, dtype)
        if loaded.reference is not None:
            loaded.reference = loaded.reference.to(args.device, dtype)
        source = f"tiny {title} (seed {args.seed}, random weights) built from a config"
    sample = module.sample(variant, args.image, args.prompt, shipped=bool(shipped))
    stages = module.trace(loaded, sample, args.max_new_tokens)
    if loaded.reference is not None:
        compare(stages, module.reference(loaded, sample, args.max_new_tokens, stages))
    return stages, f"{title} trace: {source}, {args.device} {args.dtype}", sample, loaded.reference


def answer_line(stages, sample) -> str | None:
    """'question: ... -> answer: ...' (and whether it is the sample's truth) where the last stage decoded one."""
    generated = stages[-1].extra
    if "answer" not in generated:
        return None
    line = f"question: {generated['question']!r}  ->  answer: {generated['answer']!r}"
    if sample.truth is not None:
        line += f"  (the scene's truth: {sample.truth!r}: {'correct' if generated['answer'] == sample.truth else 'WRONG'})"
    return line


def verdict(stages, reference, dtype: str):
    """(line, ok): the worst diff against the budget and whether the ids were equal."""
    worst, ids_equal = worst_diff(stages)
    tol = TOLERANCE[dtype]
    ok = (worst is None or worst <= tol) and ids_equal
    worst_text = "-" if worst is None else f"{worst:.1e}"
    return (f"against transformers' {type(reference).__name__}: max |diff| {worst_text} (budget {tol:g}), "
            f"token ids {'equal' if ids_equal else 'DIFFER'} -> {'ok' if ok else 'FAIL'}"), ok


def run(args, with_reference: bool) -> int:
    """Print the trace; 0 when every stage is within the budget and every id equal, else 1."""
    start = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        stages, header, sample, reference = trace(args, with_reference, scratch)
    print(header + "\n")
    print(format_stages(stages, reference is not None))
    line = answer_line(stages, sample)
    if line:
        print("\n" + line)
    code = 0
    if reference is not None:
        text, ok = verdict(stages, reference, args.dtype)
        print(text)
        code = 0 if ok else 1
    elif not args.no_reference:
        print("(transformers is not installed: no reference comparison; pip install -e '.[dev]')")
    if args.plot:
        plot_stages(stages, args.plot, header.split(":")[0] + (f"\n{line}" if line else ""))
        print(f"figure of the stages: {args.plot}")
    print(f"({time.time() - start:.1f}s)")
    return code
