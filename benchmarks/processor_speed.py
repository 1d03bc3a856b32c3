"""The processor path on a batch — chat template + tokenizer + image processor — minivlm's
load_processor against transformers' AutoProcessor, on the same folder and the same inputs.

    python benchmarks/processor_speed.py [--batch 8] [--repeats 5] [--family llava|llava_next]

The folder is written offline as save_pretrained writes it: LLaVA-1.5's real processor settings
(CLIP image processor at 336 px, patch 14, 'default' -> 576 image tokens, the hub's llava-1.5 chat
template) or LLaVA-NeXT's (anyres tiles of 336 on the hub's pinpoints); the tokenizer is a byte-level
BPE trained here on a small corpus (Llama's vocabulary is not shipped). The batch: `--batch`
conversations, each with the photo (matplotlib's grace_hopper.jpg) at a different size and a
question; one iteration renders every conversation's template, then runs the processor on the
batch with padding. Both outputs are checked equal first (ids and masks exactly, pixels within one
grey level). Reported: the median and best of `--repeats` timed iterations per implementation (the
two interleaved) and the ratio minivlm / transformers (below 1: minivlm is faster). Timings on a
shared machine are noisy.
"""
import argparse
import statistics
import tempfile
import time

import matplotlib.cbook
import torch
from PIL import Image

CORPUS = ["A chat between a curious user and an artificial intelligence assistant.",
          "USER: What is shown in this image? ASSISTANT: A woman in uniform, a portrait photograph.",
          "The quick brown fox jumps over the lazy dog; 12345 café naïve 東京."] * 50
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def write_folder(folder, family):
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from minivlm.processing.reference_templates import LLAVA_1_5
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=2000, show_progress=False,
                                                       special_tokens=["<s>", "</s>", "<pad>", "<image>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                                     pad_token="<pad>", additional_special_tokens=["<image>"])
    crop = dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    fields = dict(patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
                  chat_template=LLAVA_1_5)
    if family == "llava":
        processor = transformers.LlavaProcessor(transformers.CLIPImageProcessorPil(**crop), tokenizer, **fields)
    else:
        image_processor = transformers.LlavaNextImageProcessorPil(**crop, image_grid_pinpoints=PINPOINTS)
        processor = transformers.LlavaNextProcessor(image_processor, tokenizer, **fields)
    processor.save_pretrained(folder)


def batch(size):
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    images = [photo.resize((300 + 37 * i, 400 - 23 * i)) for i in range(size)]
    chats = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Question {i}: who is this?"}]}]
             for i in range(size)]
    return chats, images


def run(processor, chats, images):
    prompts = [processor.apply_chat_template(chat, add_generation_prompt=True) for chat in chats]
    return processor(text=prompts, images=images, padding=True, return_tensors="pt")


def timed(fns, repeats):
    """(median, best) seconds of each function, their runs interleaved so that a change in the
    machine's load falls on both alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [(statistics.median(t), min(t)) for t in times]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--family", choices=("llava", "llava_next"), default="llava")
    args = parser.parse_args(argv)
    import transformers

    import weights_convert
    chats, images = batch(args.batch)
    with tempfile.TemporaryDirectory() as folder:
        write_folder(folder, args.family)
        theirs, ours = transformers.AutoProcessor.from_pretrained(folder), weights_convert.load_processor(folder)
        a, b = run(ours, chats, images), run(theirs, chats, images)
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in ("input_ids", "attention_mask"))
        grey = (a["pixel_values"] - b["pixel_values"]).abs().max().item()
        assert grey <= 1 / 255 / min(theirs.image_processor.image_std) + 1e-6, grey
        ours_t, theirs_t = timed([lambda: run(ours, chats, images), lambda: run(theirs, chats, images)], args.repeats)
    tokens = a["input_ids"].numel()
    print(f"processor path, {args.family}, batch {args.batch} ({tokens} ids, pixel_values "
          f"{tuple(a['pixel_values'].shape)}), outputs equal (pixels max |diff| {grey:.1e})")
    print("| impl | median (ms) | best (ms) |\n|---|---|---|")
    for name, (median, best) in (("transformers", theirs_t), ("minivlm", ours_t)):
        print(f"| {name} | {median * 1e3:.1f} | {best * 1e3:.1f} |")
    print(f"ratio minivlm / transformers (median): {ours_t[0] / theirs_t[0]:.2f}x")


if __name__ == "__main__":
    main()
