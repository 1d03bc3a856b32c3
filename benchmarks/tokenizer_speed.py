"""Tokenizer encoding speed, minivlm against transformers, on a few thousand lines of English prose.

    python benchmarks/tokenizer_speed.py [--lines 3000] [--repeats 3]

The prose is the docstrings of the installed transformers (fixed for its pinned version, nothing
downloaded). Two tokenizers are trained on it with the `tokenizers` package and saved as the hub lays
them out: a SentencePiece-style BPE (Llama 2 / Mistral: Metaspace, byte fallback, LlamaTokenizer)
and a byte-level BPE (Qwen2Tokenizer). Each line is encoded without special tokens by
- minivlm: a fresh tokenizer (its word cache cold), one line at a time;
- transformers: a fresh tokenizer, one line at a time, and the whole list in one call (Rust, batched).
The ids are checked equal before anything is timed. Reported: tokens/s and the ratios.
"""
import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def prose_lines(n):
    """n lines of English prose: the docstrings of transformers' core modules, one stripped line each."""
    import importlib
    modules = ["transformers.generation.utils", "transformers.tokenization_utils_base", "transformers.modeling_utils",
               "transformers.trainer", "transformers.training_args", "transformers.configuration_utils",
               "transformers.processing_utils", "transformers.pipelines.base", "transformers.generation.logits_process",
               "transformers.generation.configuration_utils", "transformers.modeling_outputs"]
    lines = []
    for name in modules:
        module = importlib.import_module(name)
        for _, obj in sorted(vars(module).items()):
            for item in [obj, *vars(obj).values()] if inspect.isclass(obj) else [obj]:
                doc = inspect.getdoc(item) if callable(item) or inspect.isclass(item) else None
                if doc and getattr(item, "__module__", None) == name:
                    lines.extend(line.strip() for line in doc.splitlines() if len(line.split()) >= 4)
    lines = list(dict.fromkeys(lines))  # unique, in order
    if len(lines) < n:
        raise SystemExit(f"only {len(lines)} prose lines found in transformers' docstrings; ask for fewer")
    return lines[:n]


def llama2_folder(root, corpus, vocab_size):
    """A Llama 2 style folder: BPE with byte fallback, read through the LlamaTokenizer class (whose
    Metaspace does not split: each line reaches BPE as one word, as in Llama 2 and Mistral)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    tk = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    # Trained on "▁"-led words, as SentencePiece trains Llama 2's: no piece holds "▁" after a letter.
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       special_tokens=["<unk>", "<s>", "</s>"] + bytes_))
    folder = root / "llama2"
    folder.mkdir()
    tk.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return folder


def qwen2_folder(root, corpus, vocab_size):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder = root / "qwen2"
    folder.mkdir()
    tk.model.save(str(folder))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "added_tokens_decoder": {
            str(tk.get_vocab_size()): {"content": "<|endoftext|>", "special": True}}}))
    return folder


def measure(folder, lines, repeats):
    import transformers

    import weights_convert
    hf_ids = transformers.AutoTokenizer.from_pretrained(folder)(lines, add_special_tokens=False).input_ids
    ours = weights_convert.load_tokenizer(folder)
    if [ours.encode(line, add_special_tokens=False) for line in lines] != hf_ids:
        raise SystemExit(f"{folder.name}: minivlm's ids differ from transformers'; not timing a wrong answer")
    n_tokens = sum(map(len, hf_ids))

    def per_line(load):
        tok = load(folder)  # fresh every repeat: a cold word cache
        start = time.perf_counter()
        for line in lines:
            tok.encode(line, add_special_tokens=False)
        return time.perf_counter() - start

    def hf_batch():
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        start = time.perf_counter()
        tok(lines, add_special_tokens=False)
        return time.perf_counter() - start

    runs = (("minivlm", lambda: per_line(weights_convert.load_tokenizer)),
            ("hf_lines", lambda: per_line(transformers.AutoTokenizer.from_pretrained)), ("hf_batch", hf_batch))
    times = {name: min(fn() for _ in range(repeats)) for name, fn in runs}
    return n_tokens, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args(argv)
    lines = prose_lines(args.lines)
    print(f"{len(lines)} lines, {sum(map(len, lines))} characters of prose (transformers' docstrings)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, make in (("SentencePiece-style BPE (Llama 2)", llama2_folder),
                           ("byte-level BPE (Qwen2)", qwen2_folder)):
            n_tokens, t = measure(make(root, lines, args.vocab_size), lines, args.repeats)
            rate = {k: n_tokens / v for k, v in t.items()}
            print(f"{name}: {n_tokens} tokens | minivlm {rate['minivlm'] / 1e3:.0f}k tok/s | transformers per line "
                  f"{rate['hf_lines'] / 1e3:.0f}k tok/s ({t['minivlm'] / t['hf_lines']:.2f}x slower) | transformers "
                  f"batched {rate['hf_batch'] / 1e3:.0f}k tok/s ({t['minivlm'] / t['hf_batch']:.2f}x slower)")


if __name__ == "__main__":
    main()
