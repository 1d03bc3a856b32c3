"""python -m minivlm trace [--image FILE] [--prompt TEXT] [--checkpoint DIR] [--device cpu] [--plot FILE]

Follow one image + prompt through LLaVA and print every stage with its shape: image file -> RGB ->
resize/pad -> pixel_values -> patch embedding -> encoder layers -> selected layer -> projector ->
prompt tokens with image placeholders -> merged embeddings -> decoder -> logits -> generated tokens.
Where transformers is installed, the same stages of HF's LlavaForConditionalGeneration are computed
and the max |diff| is printed next to each.

Without --checkpoint it runs offline on an embedded default: matplotlib's grace_hopper.jpg (or a
shapes-world image), a tiny LLaVA built from a config with a fixed seed and a tiny tokenizer made
in code (minivlm/trace.py says why). Its weights are random, so its words are noise: the trace is
about the path, the shapes and the agreement with the reference.
"""
import os
import tempfile
import time

import torch

TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


def add_arguments(p):
    p.add_argument("--image", help="an image file (default: grace_hopper.jpg from matplotlib, or a shapes image)")
    p.add_argument("--prompt", help="a question (put after the image in the llava-hf prompt), or a full prompt "
                                    "holding <image>")
    p.add_argument("--checkpoint", metavar="DIR", help="a local LLaVA checkpoint folder (llava-hf layout): its "
                                                       "weights, tokenizer and preprocessor config")
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))
    p.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    p.add_argument("--plot", metavar="FILE", help="save a figure of the stages (needs matplotlib)")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--no-reference", action="store_true",
                   help="skip transformers (faster; the default model then gets minivlm's own seeded init)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny default model")
    p.add_argument("--model", choices=("llava", "qwen2_vl"), default="llava",
                   help="which tiny default to trace (a --checkpoint's config.json decides on its own)")


def _transformers_available():
    try:
        import transformers
    except ImportError:
        return False
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return True


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import weights_convert
    from minivlm.trace import (compare, format_stages, load_default, plot_stages, reference_llava, trace_llava,
                               worst_diff)
    if args.image is not None and not os.path.isfile(args.image):
        print(f"error: no image file at {args.image}")
        return 2
    dtype = getattr(torch, args.dtype)
    with_reference = not args.no_reference and _transformers_available()
    start = time.time()
    from minivlm.trace_qwen2_vl import is_qwen2_vl
    qwen2_vl = args.model == "qwen2_vl" or (args.checkpoint and is_qwen2_vl(args.checkpoint))
    with tempfile.TemporaryDirectory() as scratch:
        if qwen2_vl:  # minivlm/trace_qwen2_vl.py: the same table, Qwen2-VL's stages
            from minivlm.trace_qwen2_vl import run as run_qwen2_vl
            stages, source, reference = run_qwen2_vl(args, with_reference, scratch)
        elif args.checkpoint:
            folder = args.checkpoint
            ours = weights_convert.load_pretrained(folder, dtype=dtype, device=args.device)
            processor = weights_convert.load_image_processor(folder)
            tokenizer = weights_convert.load_tokenizer(folder)
            reference = None
            if with_reference:  # local files only: HF_HUB_OFFLINE is set
                from transformers import LlavaForConditionalGeneration
                reference = LlavaForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()
            source = f"checkpoint {folder}"
        else:
            folder = scratch
            ours, processor, tokenizer, reference = load_default(folder, args.seed, reference=with_reference)
            ours = ours.to(args.device, dtype)
            source = f"tiny LLaVA (seed {args.seed}, random weights) built from a config"
        if not qwen2_vl:
            if reference is not None:
                reference = reference.to(args.device, dtype)
            stages = trace_llava(ours, processor, tokenizer, args.image, args.prompt, args.max_new_tokens)
            if reference is not None:
                compare(stages, reference_llava(reference, folder, args.image, args.prompt, args.max_new_tokens))
    name = "Qwen2-VL" if qwen2_vl else "LLaVA"
    ref_class = type(reference).__name__ if reference is not None else ""
    print(f"{name} trace: {source}, {args.device} {args.dtype}\n")
    print(format_stages(stages, reference is not None))
    code = 0
    if reference is not None:
        worst, ids_equal = worst_diff(stages)
        tol = TOLERANCE[args.dtype]
        ok = (worst is None or worst <= tol) and ids_equal
        print(f"\nagainst transformers' {ref_class}: max |diff| {worst:.1e} "
              f"(budget {tol:g}), token ids {'equal' if ids_equal else 'DIFFER'} -> {'ok' if ok else 'FAIL'}")
        code = 0 if ok else 1
    elif not args.no_reference:
        print("\n(transformers is not installed: no reference comparison; pip install -e '.[dev]')")
    if args.plot and qwen2_vl:
        print("(--plot draws LLaVA's stages; for Qwen2-VL see notebooks/09_qwen2_vl.ipynb)")
    elif args.plot:
        plot_stages(stages, args.plot)
        print(f"figure of the stages: {args.plot}")
    print(f"({time.time() - start:.1f}s)")
    return code
