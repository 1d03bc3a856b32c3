"""python -m minivlm trace [--image FILE] [--prompt TEXT] [--checkpoint DIR | --random] [--device cpu] [--plot FILE]

Follow one image + prompt through LLaVA and print every stage with its shape: image file -> RGB ->
resize/pad -> pixel_values -> patch embedding -> encoder layers -> selected layer -> projector ->
prompt tokens with image placeholders -> merged embeddings -> decoder -> logits -> generated tokens.
Where transformers is installed, the same stages of HF's LlavaForConditionalGeneration, loaded from
the same folder, are computed and the max |diff| is printed next to each.

With no argument it runs offline on the tiny LLaVA the package ships (minivlm/pretrained/shapes-llava,
trained by `python -m minivlm train llava`): a shapes-world scene it never saw and one of the scene's
questions, and it says whether the generated answer is the true one. --image / --prompt change the
sample; --checkpoint DIR traces a local llava-hf folder; --random the untrained tiny LLaVA built from
a config with a fixed seed (minivlm/trace.py), on matplotlib's grace_hopper.jpg: its words are noise,
the trace is about the path, the shapes and the agreement with the reference.
"""
import os
import tempfile
import time

import torch

from minivlm.errors import UsageError

TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


def add_arguments(p):
    p.add_argument("--image", help="an image file (default: grace_hopper.jpg from matplotlib, or a shapes image)")
    p.add_argument("--prompt", help="a question (put after the image in the llava-hf prompt), or a full prompt "
                                    "holding <image>")
    p.add_argument("--checkpoint", metavar="DIR", help="a local LLaVA checkpoint folder (llava-hf layout): its "
                                                       "weights, tokenizer and preprocessor config")
    p.add_argument("--random", action="store_true", help="the untrained tiny LLaVA built from a config (seeded) "
                                                         "instead of the shipped trained one")
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))
    p.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    p.add_argument("--plot", metavar="FILE", help="save a figure of the stages (needs matplotlib)")
    p.add_argument("--max-new-tokens", type=int, default=10)
    p.add_argument("--no-reference", action="store_true",
                   help="skip transformers (faster; the --random model then gets minivlm's own seeded init)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --random model")
    p.add_argument("--model", choices=("llava", "llava_next_siglip", "qwen2_vl"), default="llava",
                   help="what to trace: LLaVA (the shipped trained one, or --random), the seed's LLaVA-NeXT + "
                        "SigLIP on a 27x104 image (minivlm/trace_next.py), or a tiny Qwen2-VL "
                        "(minivlm/trace_qwen2_vl.py); a --checkpoint's config.json decides on its own")


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
    from minivlm import pretrained
    from minivlm.trace import (SHAPES_LLAVA, compare, format_stages, load_default, load_folder, plot_stages,
                               reference_llava, shapes_sample, trace_llava, worst_diff)
    if args.image is not None and not os.path.isfile(args.image):
        raise UsageError(f"no image file at {args.image} (--image expects an image file)")
    if args.random and args.checkpoint:
        raise UsageError("--random and --checkpoint exclude each other (--random builds an untrained model)")
    dtype = getattr(torch, args.dtype)
    with_reference = not args.no_reference and _transformers_available()
    from minivlm.trace_next import is_next_checkpoint, run_command
    if args.model == "llava_next_siglip" or is_next_checkpoint(args.checkpoint):
        return run_command(args, dtype, with_reference, TOLERANCE[args.dtype])  # the anyres trace
    start = time.time()
    from minivlm.trace_qwen2_vl import is_qwen2_vl
    qwen2_vl = args.model == "qwen2_vl" or (args.checkpoint and is_qwen2_vl(args.checkpoint))
    image, prompt, image_name, truth = args.image, args.prompt, None, None
    with tempfile.TemporaryDirectory() as scratch:
        if qwen2_vl:  # minivlm/trace_qwen2_vl.py: the same table, Qwen2-VL's stages
            from minivlm.trace_qwen2_vl import run as run_qwen2_vl
            stages, source, reference = run_qwen2_vl(args, with_reference, scratch)
        elif args.random:
            folder = scratch
            ours, processor, tokenizer, reference = load_default(folder, args.seed, reference=with_reference)
            ours = ours.to(args.device, dtype)
            source = f"tiny LLaVA (seed {args.seed}, random weights) built from a config"
        else:
            folder = args.checkpoint or pretrained.path(SHAPES_LLAVA)
            ours, processor, tokenizer, reference = load_folder(folder, dtype, args.device, with_reference)
            source = (f"checkpoint {folder}" if args.checkpoint else
                      f"{SHAPES_LLAVA}, the tiny LLaVA trained on the shapes world (minivlm/pretrained/{SHAPES_LLAVA})")
            if not args.checkpoint and image is None:  # the shipped model's own kind of image
                sample = shapes_sample()
                image, image_name = sample.image, sample.name
                prompt, truth = (prompt, None) if prompt else (sample.question, sample.answer)
        if not qwen2_vl:
            stages = trace_llava(ours, processor, tokenizer, image, prompt, args.max_new_tokens, image_name)
            if reference is not None:
                compare(stages, reference_llava(reference, folder, image, prompt, args.max_new_tokens))
    name = "Qwen2-VL" if qwen2_vl else "LLaVA"
    ref_class = type(reference).__name__ if reference is not None else ""
    print(f"{name} trace: {source}, {args.device} {args.dtype}\n")
    print(format_stages(stages, reference is not None))
    generated = stages[-1].extra
    if isinstance(generated, dict) and "answer" in generated:  # LLaVA's last stage: the decoded answer
        line = f"\nquestion: {generated['question']!r}  ->  answer: {generated['answer']!r}"
        if truth is not None:
            line += f"  (the scene's truth: {truth!r}: {'correct' if generated['answer'] == truth else 'WRONG'})"
        print(line)
    code = 0
    if reference is not None:
        worst, ids_equal = worst_diff(stages)
        tol = TOLERANCE[args.dtype]
        ok = (worst is None or worst <= tol) and ids_equal
        print(f"against transformers' {ref_class}: max |diff| {worst:.1e} "
              f"(budget {tol:g}), token ids {'equal' if ids_equal else 'DIFFER'} -> {'ok' if ok else 'FAIL'}")
        code = 0 if ok else 1
    elif not args.no_reference:
        print("(transformers is not installed: no reference comparison; pip install -e '.[dev]')")
    if args.plot and qwen2_vl:
        print("(--plot draws LLaVA's stages; for Qwen2-VL see notebooks/09_qwen2_vl.ipynb)")
    elif args.plot:
        plot_stages(stages, args.plot)
        print(f"figure of the stages: {args.plot}")
    print(f"({time.time() - start:.1f}s)")
    return code
