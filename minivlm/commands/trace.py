"""python -m minivlm trace [--model NAME | --checkpoint DIR] [--random] [--image FILE] [--prompt TEXT] [--plot FILE]

Follow one sample through a model and print every stage with its shape. For LLaVA (the default):
image file -> RGB -> resize/pad -> pixel_values -> patch embedding -> encoder layers -> selected
layer -> projector -> prompt tokens with image placeholders -> merged embeddings -> decoder ->
logits -> generated tokens. Where transformers is installed, the same stages of its model, loaded
from the same folder, are computed and the max |diff| is printed next to each.

--model picks the family (vit, clip, siglip, blip, blip_itm, blip2, instructblip, llama, mistral,
qwen2, opt, llava, llava_next, llava_next_siglip, llava_onevision, llava_onevision_images,
llava_onevision_video, qwen2_vl, qwen2_vl_video, qwen2_5_vl, qwen2_5_vl_video); a
--checkpoint folder's config.json decides on its own. With no argument it runs offline on the tiny
LLaVA the package ships (minivlm/pretrained/shapes-llava, trained by `python -m minivlm train
llava`): a shapes-world scene it never saw and one of the scene's questions, and it says whether
the generated answer is the true one. Families with a shipped model (llava, clip, blip, blip_itm)
use it; the others, and --random, a seeded tiny model built from a config (minivlm/trace/tiny.py):
its words are noise, the trace is about the path, the shapes and the agreement with the reference.
"""
import os

from minivlm.errors import UsageError
from minivlm.trace.families import MODELS
from minivlm.trace.run import TOLERANCE


def add_arguments(p):
    p.add_argument("--image", help="an image file (default: grace_hopper.jpg from matplotlib, or a shapes image)")
    p.add_argument("--prompt", help="a question (put after the image in the llava-hf prompt), or a full prompt "
                                    "holding <image>")
    p.add_argument("--checkpoint", metavar="DIR", help="a local checkpoint folder (HF layout): its weights, "
                                                       "tokenizer and preprocessor config")
    p.add_argument("--random", action="store_true", help="the untrained tiny model built from a config (seeded) "
                                                         "instead of the shipped trained one")
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))
    p.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    p.add_argument("--plot", metavar="FILE", help="save a figure of the stages (needs matplotlib)")
    p.add_argument("--max-new-tokens", type=int, default=10)
    p.add_argument("--no-reference", action="store_true",
                   help="skip transformers (faster; the --random model then gets minivlm's own seeded init)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny model")
    p.add_argument("--model", choices=list(MODELS), default="llava",
                   help="the family to trace (minivlm/trace/<family>.py); a --checkpoint's config.json decides on its own")


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from minivlm.trace.run import run as run_trace
    from minivlm.trace.tiny import transformers_or_none
    if args.image is not None and not os.path.isfile(args.image):
        raise UsageError(f"no image file at {args.image} (--image expects an image file)")
    if args.random and args.checkpoint:
        raise UsageError("--random and --checkpoint exclude each other (--random builds an untrained model)")
    return run_trace(args, not args.no_reference and transformers_or_none() is not None)
