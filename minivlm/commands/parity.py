"""python -m minivlm parity [--family F ...] [--checkpoint DIR] [--device cuda] [--dtype bfloat16]

Without --checkpoint: for each family, build tiny HF references from configs (no download),
convert them with weights_convert, run both and print max |diff| per output field.
With --checkpoint DIR: the same for a local HF model folder, on inputs made from its config.
"""
import os
import time

import torch

TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


def add_arguments(p):
    p.add_argument("--family", action="append", help="only these families (default: all)")
    p.add_argument("--checkpoint", metavar="DIR", help="a local Hugging Face model folder to check")
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))
    p.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    p.add_argument("--tolerance", type=float, help="max |diff| allowed (default: DESIGN.md's budget per dtype)")


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        print("parity needs the reference: pip install -e '.[dev]' (transformers)")
        return 2
    from minivlm.parity import all_cases, format_table, run_case
    from minivlm.parity.checkpoint import checkpoint_case

    dtype = getattr(torch, args.dtype)
    tol = args.tolerance or TOLERANCE[args.dtype]
    cases = [checkpoint_case(args.checkpoint)] if args.checkpoint else all_cases(args.family)
    rows, failures, start = [], 0, time.time()
    for case in cases:
        result = run_case(case, device=args.device, dtype=dtype)
        for field, diff in result["diffs"].items():
            ok = diff <= tol
            failures += not ok
            rows.append((case.name, field, diff, ok))
        if result["generate_equal"] is not None:
            ok = result["generate_equal"]
            failures += not ok
            rows.append((case.name, "greedy ids", "equal" if ok else "differ", ok))
    print(format_table(rows))
    print(f"\n{len(cases)} case(s), {len(rows)} comparison(s), {failures} over tolerance {tol:g} "
          f"({args.device}, {args.dtype}, {time.time() - start:.1f}s)")
    return 1 if failures else 0
