"""python -m minivlm parity [--family F ...] [--checkpoint DIR] [--device cuda] [--dtype bfloat16]

Without --checkpoint: for each family, build tiny HF references from configs (no download),
convert them with weights_convert, run both and print max |diff| per output field (fp32), or in
bf16/fp16 the diff relative to the reference's scale and the top-1 agreement of the logits.
With --checkpoint DIR: the same for a local HF model folder, on inputs made from its config; the
reference runs first in --dtype and is freed before minivlm's model loads (one model in memory at a
time), and the peak memory of the run is printed next to the size of the weights.
"""
import os
import time

import torch

from minivlm.errors import UsageError

DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(p):
    from minivlm.parity import FAMILIES
    p.add_argument("--family", action="append", choices=FAMILIES, metavar="FAMILY",
                   help=f"only these families (repeat the option; default: all of {', '.join(FAMILIES)})")
    p.add_argument("--checkpoint", metavar="DIR", help="a local Hugging Face model folder to check")
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--tolerance", type=float, help="max |diff| allowed, relative in bf16/fp16 "
                                                   "(default: DESIGN.md's budget per dtype)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: 1 for the tiny built-in cases, "
                                                 "torch's default with --checkpoint)")


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        raise UsageError("parity needs the reference: pip install -e '.[dev]' (transformers)") from None
    from minivlm.parity import all_cases, check_case, format_table
    from minivlm.parity.harness import TOP1_AGREEMENT, default_tolerance
    from minivlm.parity.checkpoint import (check_image_processor, check_processor, check_tokenizer, checkpoint_case,
                                           peak_memory, weights_size)
    from weights_convert.errors import CheckpointError

    # The built-in models are tiny: extra OpenMP threads only wait on them (about 5x slower
    # measured with 2 threads on a busy 2-core machine). A real checkpoint wants them all.
    if args.threads or not args.checkpoint:
        torch.set_num_threads(args.threads or 1)
    dtype = getattr(torch, args.dtype)
    tol = args.tolerance or default_tolerance(dtype)
    notes, start = [], time.time()
    try:
        cases = [checkpoint_case(args.checkpoint)] if args.checkpoint else all_cases(args.family)
        rows = []
        for case in cases:
            rows += check_case(case, device=args.device, dtype=dtype, tolerance=tol)
        if args.checkpoint:
            rows += check_image_processor(args.checkpoint)
            try:
                rows += check_tokenizer(args.checkpoint)
            except CheckpointError as e:  # e.g. a WordPiece tokenizer: the model is still judged
                notes.append(f"tokenizer not checked: {e}")
            try:
                rows += check_processor(args.checkpoint)
            except ImportError as e:  # transformers' video processors need torchvision
                notes.append(f"whole processor not checked (transformers could not build its own): {e}")
    except (CheckpointError, ValueError) as e:
        raise UsageError(f"parity: {e}") from e
    failures = sum(not ok for *_, ok in rows)
    print(format_table(rows))
    budget = f"tolerance {tol:g}" if dtype == torch.float32 else \
        f"relative tolerance {tol:g} or under {TOP1_AGREEMENT:.0%} top-1 agreement"
    for note in notes:
        print(note)
    if args.checkpoint:
        print(f"memory: {peak_memory(args.device)}; weights on disk {weights_size(args.checkpoint) / 1e9:.2f} GB "
              f"(reference and minivlm loaded one after the other)")
    print(f"\n{len(cases)} case(s), {len(rows)} comparison(s), {failures} over {budget} "
          f"or differing ({args.device}, {args.dtype}, {time.time() - start:.1f}s)")
    return 1 if failures else 0
