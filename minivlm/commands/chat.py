"""python -m minivlm chat [--checkpoint DIR] [--image FILE ...] [--video DIR|FILE.npy ...] [--prompt TEXT]

Talk to a vision-language checkpoint the way its model card does: the images and the question go
through the folder's processor and chat template, the reply is streamed token by token as it is
generated, and the speed is printed at the end (tokens/s, prefill included).

    python -m minivlm chat --image scene.png --prompt "what color is the circle?"
    python -m minivlm chat --checkpoint llava-1.5-7b-hf --image photo.jpg --num-beams 3   # interactive

Without --checkpoint it runs the tiny LLaVA the package ships (minivlm/pretrained/shapes-llava, with
its processor_config.json and chat template), which answers questions about shapes-world scenes
(minivlm/data/shapes.py makes them). Without
--prompt it is a multi-turn session reading one question per line from stdin (an empty line or
EOF ends it); the images belong to the first turn. --compare runs transformers' generate on the
same inputs with the same options and says whether the ids are equal (exit code 1 if not).
Errors in what was given (a missing image, bad options) are one line on stderr, exit code 2.
"""
import os
import sys
import time
from pathlib import Path

import torch


def add_arguments(p):
    p.add_argument("--checkpoint", metavar="DIR", help="a model folder in the hub's layout (default: the shipped "
                                                       "shapes-llava)")
    p.add_argument("--image", action="append", default=[], metavar="FILE", help="an image (repeatable)")
    p.add_argument("--video", action="append", default=[], metavar="DIR|FILE.npy",
                   help="a video: a folder of frame images (sorted by name) or a (frames, H, W, 3) uint8 .npy (repeatable)")
    p.add_argument("--prompt", metavar="TEXT", help="one question, one answer; without it: an interactive session")
    p.add_argument("--template", default="llava_hf",
                   help="hand-written conversation template (minivlm/processing/conversation.py) for folders "
                        "without a chat template of their own (default: llava_hf)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50, help="keep the k likeliest tokens when sampling (transformers' "
                                                        "default 50; 0: all)")
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (no streaming)")
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--no-repeat-ngram-size", type=int)
    p.add_argument("--min-new-tokens", type=int)
    p.add_argument("--stop", action="append", metavar="TEXT", help="a stop string (repeatable)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto (the checkpoint's)")
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))
    p.add_argument("--compare", action="store_true",
                   help="also run transformers on the same inputs and say whether the ids are equal")


class UsageError(Exception):
    """Something given on the command line is wrong: one line on stderr, exit code 2."""


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return chat(args)
    except UsageError as e:
        print(f"python -m minivlm chat: error: {e}", file=sys.stderr)
        return 2


def chat(args):
    if args.compare and args.do_sample:
        raise UsageError("--compare needs a decode with one right answer (greedy or beams); drop --do-sample")
    images = [read_image(p) for p in args.image]
    videos = [read_video(p) for p in args.video]
    folder = checkpoint_folder(args.checkpoint)
    model, processor = load(folder, args.dtype, args.device)
    options = generate_options(args, processor)
    turns = []
    questions = [args.prompt] if args.prompt is not None else ask_lines()
    for question in questions:
        turns.append(("user", question))
        inputs = model_inputs(processor, args.template, turns, images, videos, model, args.device)
        reply_ids, seconds = reply(model, inputs, options, processor)
        n = len(reply_ids)
        print(f"[{n} tokens in {seconds:.2f} s: {n / seconds:.1f} tokens/s, prefill included]", file=sys.stderr)
        if args.compare:
            equal = compare(folder, model, inputs, options, reply_ids)
            if not equal:
                return 1
        turns.append(("assistant", processor.decode(reply_ids, skip_special_tokens=True).strip()))
    return 0


# --- what was given ------------------------------------------------------------------------------

def read_image(path):
    from minivlm.processing.image import load_image
    try:
        return load_image(path).convert("RGB")
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--image {path}: {e}") from None


def read_video(path):
    """A folder of frames (sorted by name) or a .npy array -> (frames, H, W, 3) uint8."""
    import numpy as np
    path = Path(path)
    if path.is_dir():
        names = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        if not names:
            raise UsageError(f"--video {path}: the folder holds no frame images (.png, .jpg ...)")
        return np.stack([np.asarray(read_image(p)) for p in names])
    if path.suffix == ".npy" and path.is_file():
        frames = np.load(path)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise UsageError(f"--video {path}: expected (frames, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
        return frames
    raise UsageError(f"--video {path}: expected a folder of frame images or a .npy file, found "
                     f"{'no such file' if not path.exists() else 'another kind of file'}")


def checkpoint_folder(checkpoint):
    if checkpoint is None:
        from minivlm import pretrained
        return pretrained.path("shapes-llava")
    folder = Path(checkpoint)
    if not (folder / "config.json").is_file():
        raise UsageError(f"--checkpoint {folder}: no config.json there (a model folder in the hub's layout)")
    return folder


def ask_lines():
    """Questions from stdin, one per line, until an empty line or EOF."""
    while True:
        if sys.stdin.isatty():
            print("you> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            return
        yield line.strip()


def generate_options(args, processor):
    from minivlm.streamer import TextStreamer
    options = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, length_penalty=args.length_penalty,
                   repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
                   min_new_tokens=args.min_new_tokens)
    if args.do_sample:
        options.update(do_sample=True, temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p,
                       generator=torch.Generator(args.device).manual_seed(args.seed))
    if args.stop:
        options.update(stop_strings=args.stop, tokenizer=processor.tokenizer)
    if args.num_beams == 1:
        options["streamer"] = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    return options


# --- the model and its processor ----------------------------------------------------------------

def load(folder, dtype, device):
    import weights_convert
    try:
        model = weights_convert.load_pretrained(folder, dtype=dtype, device=device)
    except (ValueError, TypeError) as e:
        raise UsageError(f"--dtype {dtype} / --device {device}: {e}") from None
    if not hasattr(model, "generate"):
        raise UsageError(f"{folder} holds a {type(model).__name__}, which does not generate text")
    return model, open_processor(folder, model)


def open_processor(folder, model):
    """weights_convert.load_processor where the folder names its processor (the hub's layout, the
    shipped shapes-llava). A LLaVA folder without processor_config.json (a training run) gets the
    same LlavaProcessor, with the fields under which it counts image tokens as the model does."""
    import weights_convert
    from weights_convert.errors import CheckpointError
    try:
        return weights_convert.load_processor(folder)
    except CheckpointError as e:
        if type(model).__name__ != "LlavaForConditionalGeneration":
            raise UsageError(str(e)) from None
    from minivlm.processing.processor import LlavaProcessor
    tokenizer, config = weights_convert.load_tokenizer(folder), model.config
    return LlavaProcessor(tokenizer, weights_convert.load_image_processor(folder), **config.processor_fields(),
                          image_token=tokenizer.convert_ids_to_tokens([config.image_token_index])[0])


def prompt_text(processor, template, turns, n_images, n_videos):
    """The conversation as the prompt string: the folder's chat template when it has one, else the
    hand-written `template`. The images (and videos) are placed in the first user turn."""
    if processor.chat_template:
        messages = [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in turns]
        messages[0]["content"][:0] = [{"type": "image"}] * n_images + [{"type": "video"}] * n_videos
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    from minivlm.processing.conversation import TEMPLATES, render
    if template not in TEMPLATES:
        raise UsageError(f"--template {template!r}: known templates are {', '.join(sorted(TEMPLATES))}")
    if n_videos:
        raise UsageError("videos need a folder with a chat template (the hand-written templates write images only)")
    placeholders = (processor.image_token + "\n") * n_images if n_images else ""
    turns = [(role, placeholders + text if i == 0 else text) for i, (role, text) in enumerate(turns)]
    return render(TEMPLATES[template], turns, add_generation_prompt=True).text


def model_inputs(processor, template, turns, images, videos, model, device):
    """Text + images -> the model's keyword inputs, on its device and (for pixels) its dtype."""
    try:  # a template's own raise_exception, placeholders and images that disagree ...
        text = prompt_text(processor, template, turns, len(images), len(videos))
        inputs = processor(text=[text], images=images or None, videos=videos or None, return_tensors="pt")
    except ValueError as e:
        raise UsageError(str(e)) from None
    dtype = next(model.parameters()).dtype
    return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
            for k, v in inputs.items() if torch.is_tensor(v)}


# --- generating and comparing -------------------------------------------------------------------

def reply(model, inputs, options, processor):
    """Generate (streaming when no beams) -> (the new ids, seconds)."""
    start = time.perf_counter()
    try:
        out = model.generate(**inputs, **options)
    except ValueError as e:
        raise UsageError(str(e)) from None
    seconds = time.perf_counter() - start
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    if "streamer" not in options:  # beams: the reply is known only now
        print(processor.decode(new, skip_special_tokens=True).strip())
    return new, seconds


def compare(folder, model, inputs, options, ours):
    """transformers' generate on the same inputs with the same options: are the new ids equal?"""
    import json

    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    architecture = json.loads((Path(folder) / "config.json").read_text())["architectures"][0]
    dtype = next(model.parameters()).dtype
    device = inputs["input_ids"].device
    reference = getattr(transformers, architecture).from_pretrained(folder, dtype=dtype).to(device).eval()
    hf_options = {k: v for k, v in options.items() if k != "streamer"}
    for name in ("eos_token_id", "pad_token_id"):  # the same resolution ours made (generation_config, then config)
        stored = (getattr(model, "generation_config", None) or {}).get(name)
        if stored is not None:
            hf_options[name] = stored
    if "stop_strings" in hf_options:  # HF's stop strings read its own tokenizer's vocabulary
        hf_options["tokenizer"] = transformers.AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        theirs = reference.generate(**inputs, do_sample=False, **hf_options)[0, inputs["input_ids"].shape[1]:].tolist()
    if theirs == ours:
        print(f"transformers: ids equal ({len(ours)} new tokens)")
        return True
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    print(f"transformers: ids DIFFER from new token {at}: ours {ours[at:at + 8]} ..., transformers "
          f"{theirs[at:at + 8]} ... ({len(ours)} vs {len(theirs)} new tokens)")
    return False
