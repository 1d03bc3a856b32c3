"""load_tokenizer: a HF tokenizer folder -> a minivlm Tokenizer.

Reads tokenizer_config.json (the class, the special tokens, padding side, model_max_length; older
folders keep the special tokens in special_tokens_map.json) and either tokenizer.json,
vocab.json + merges.txt (CLIP) or vocab.txt (BERT). As in transformers 5, the class decides:
CLIPTokenizer, GPT2Tokenizer(Fast), Qwen2Tokenizer(Fast), LlamaTokenizer(Fast) and BertTokenizer(Fast)
rebuild their own pipeline around the file's vocabulary (and merges); PreTrainedTokenizerFast (Llama 3
and most recent checkpoints) takes tokenizer.json as is, a WordPiece model included.
"""
import json
from pathlib import Path

from minivlm.processing.chat_template import load_chat_template
from minivlm.processing.tokenizer import LARGE_INTEGER, AddedToken, template_from_json
from minivlm.processing.siglip_tokenizer import SiglipTokenizer
from minivlm.processing.tokenizer_families import (bert_tokenizer, clip_tokenizer, gpt2_tokenizer, llama_tokenizer,
                                                   merges_from_json, qwen2_tokenizer,
                                                   tokenizer_from_json, wordpiece_tokenizer_from_json)
from minivlm.processing.unigram import UnigramModel, read_sentencepiece_model
from minivlm.processing.wordpiece import read_vocab_txt

from .errors import CheckpointError, MissingConfigError

# HF's SPECIAL_TOKENS_ATTRIBUTES, in its order (which decides the ids of tokens it has to add).
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
TOKENIZER_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")  # the ones our Tokenizer keeps
GENERIC = ("PreTrainedTokenizerFast", "TokenizersBackend")
# HF class defaults for the named special tokens, used when tokenizer_config.json leaves them out.
CLASS_DEFAULTS = {
    "CLIPTokenizer": dict(bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                          pad_token="<|endoftext|>", padding_side="right"),
    "GPT2Tokenizer": dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                          pad_token=None, padding_side="right"),
    "Qwen2Tokenizer": dict(bos_token=None, eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                           pad_token="<|endoftext|>", padding_side="right"),
    "LlamaTokenizer": dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token=None, padding_side="left"),
    "BertTokenizer": dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                          mask_token="[MASK]", padding_side="right"),
}
SUPPORTED = sorted(set(CLASS_DEFAULTS) | set(GENERIC) | {"SiglipTokenizer"})


def read_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def token_text(value):
    """A special token as tokenizer_config stores it: a string or an AddedToken dict."""
    return value.get("content") if isinstance(value, dict) else value


def collect_added_tokens(spec, config, specials, vocab):
    """tokenizer.json's added_tokens, tokenizer_config's added_tokens_decoder and the named special
    tokens, merged by content. A named token not yet added is added as special, unnormalised, with its
    vocabulary id (or the next free id), as HF's TokenizersBackend does."""
    found = {}
    for t in (spec or {}).get("added_tokens", []):
        found[t["content"]] = AddedToken(t["content"], t["id"], t.get("special", False), t.get("single_word", False),
                                         t.get("lstrip", False), t.get("rstrip", False), t.get("normalized", False))
    for idx, t in (config.get("added_tokens_decoder") or {}).items():
        if t["content"] not in found:
            found[t["content"]] = AddedToken(t["content"], int(idx), t.get("special", False),
                                             t.get("single_word", False), t.get("lstrip", False),
                                             t.get("rstrip", False), t.get("normalized", not t.get("special", False)))
    extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    extra = list(extra.values()) if isinstance(extra, dict) else list(extra)
    next_id = max([*vocab.values(), *(t.id for t in found.values()), -1]) + 1
    for value in [*specials.values(), *extra]:
        content = token_text(value)
        if content is None or content in found:
            continue
        flags = value if isinstance(value, dict) else {}
        token_id = vocab.get(content)
        if token_id is None:
            token_id, next_id = next_id, next_id + 1
        found[content] = AddedToken(content, token_id, True, flags.get("single_word", False),
                                    flags.get("lstrip", False), flags.get("rstrip", False),
                                    flags.get("normalized", False))
    return list(found.values())


def flags_template(config, specials, token_id):
    """HF's update_post_processor: bos/eos around the text as add_bos_token / add_eos_token say."""
    template = ["A"]
    if config.get("add_bos_token") and specials.get("bos_token") is not None:
        template.insert(0, token_id(specials["bos_token"]))
    if config.get("add_eos_token") and specials.get("eos_token") is not None:
        template.append(token_id(specials["eos_token"]))
    return template


def siglip_tokenizer(folder, spiece, config):
    """SiglipTokenizer folders (google/siglip-*): spiece.model, a SentencePiece Unigram model, read by
    hand (minivlm/processing/unigram.py); the special tokens and padding from tokenizer_config.json."""
    if not spiece.is_file():
        raise MissingConfigError(f"SiglipTokenizer needs spiece.model in {folder}")
    try:
        unigram = UnigramModel(read_sentencepiece_model(spiece))
    except (ValueError, IndexError) as e:
        raise CheckpointError(f"{spiece}: {e}") from None
    names = dict(eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    names = {k: token_text(config.get(k, v)) for k, v in names.items()}
    added = collect_added_tokens(None, config, names, unigram.vocab)
    return SiglipTokenizer(unigram, do_lower_case=config.get("do_lower_case", True), added_tokens=added,
                           padding_side=config.get("padding_side", "right"),
                           truncation_side=config.get("truncation_side", "right"),
                           model_max_length=config.get("model_max_length", 64), **names)


def load_tokenizer(folder):
    """A HF tokenizer folder -> a minivlm Tokenizer, with the folder's chat template (if any)."""
    folder = Path(folder)
    tokenizer = build_tokenizer(folder)
    try:
        tokenizer.chat_template = load_chat_template(folder)
    except ValueError as e:
        raise CheckpointError(f"{folder}: {e}") from None
    return tokenizer


def build_tokenizer(folder):
    if not folder.is_dir():
        raise MissingConfigError(f"no tokenizer folder at {folder}")
    config_path, json_path = folder / "tokenizer_config.json", folder / "tokenizer.json"
    vocab_path, merges_path, vocab_txt = folder / "vocab.json", folder / "merges.txt", folder / "vocab.txt"
    bpe_files = vocab_path.is_file() and merges_path.is_file()
    spiece = folder / "spiece.model"
    if not (json_path.is_file() or bpe_files or vocab_txt.is_file() or spiece.is_file()):
        raise MissingConfigError(f"{folder} has neither tokenizer.json nor vocab.json + merges.txt nor vocab.txt "
                                 f"nor spiece.model")
    config = read_json(config_path) if config_path.is_file() else {}
    map_path = folder / "special_tokens_map.json"
    if "added_tokens_decoder" not in config and map_path.is_file():
        # transformers' legacy path: the map's special tokens override tokenizer_config's.
        config = config | read_json(map_path)
    spec = read_json(json_path) if json_path.is_file() else None
    kind = (config.get("tokenizer_class") or ("PreTrainedTokenizerFast" if spec else "")).removesuffix("Fast")
    kind = "PreTrainedTokenizerFast" if kind == "PreTrainedTokenizer" else kind
    if kind not in SUPPORTED:
        raise CheckpointError(f"tokenizer_class {config.get('tokenizer_class')!r} in {config_path} is not supported; "
                              f"supported: {', '.join(SUPPORTED)}")

    if kind == "SiglipTokenizer":
        return siglip_tokenizer(folder, spiece, config)

    # The vocabulary and merges: from tokenizer.json, else (CLIP's hub files) vocab.json + merges.txt,
    # else (BERT's) vocab.txt.
    if spec is not None:
        model_type = spec.get("model", {}).get("type")
        if model_type not in ("BPE", "WordPiece"):  # SentencePiece Unigram (T5, SigLIP), WordLevel ...
            raise CheckpointError(f"{json_path}: a {model_type} tokenizer model is not implemented in minivlm "
                                  f"(BPE and WordPiece are); use transformers' tokenizer for this folder")
        vocab, merges = spec["model"]["vocab"], merges_from_json(spec["model"].get("merges", []))
    elif kind == "BertTokenizer":
        if not vocab_txt.is_file():
            raise MissingConfigError(f"BertTokenizer is read from vocab.txt or tokenizer.json (vocab.json + merges.txt "
                                     f"are not supported for it); {folder} has neither")
        vocab, merges = read_vocab_txt(vocab_txt), []
    elif not bpe_files:
        raise MissingConfigError(f"{kind} needs tokenizer.json or vocab.json + merges.txt in {folder}")
    else:
        vocab = read_json(vocab_path)
        lines = merges_path.read_text(encoding="utf-8").splitlines()
        merges = [tuple(line.split(" ", 1)) for line in lines if line and not line.startswith("#version")]

    defaults = CLASS_DEFAULTS.get(kind, dict(padding_side="right"))
    specials = {name: config.get(name, defaults.get(name)) for name in SPECIAL_NAMES}
    added = collect_added_tokens(spec, config, specials, vocab)
    token_id = ({t.content: t.id for t in added} | vocab).get
    common = dict(added_tokens=added, padding_side=config.get("padding_side", defaults["padding_side"]),
                  truncation_side=config.get("truncation_side", "right"),
                  model_max_length=config.get("model_max_length", LARGE_INTEGER))
    names = {name: token_text(specials[name]) for name in TOKENIZER_NAMES}
    explicit_flags = "add_bos_token" in config or "add_eos_token" in config

    try:
        if kind == "CLIPTokenizer":  # always <|startoftext|> ... <|endoftext|> (HF sets RobertaProcessing)
            return clip_tokenizer(vocab, merges, **names, **common)
        post = spec.get("post_processor") if spec else None
        template = flags_template(config, names, token_id) if explicit_flags or post is None else template_from_json(post)
        if kind == "BertTokenizer":  # always [CLS] A [SEP]: the class sets it last, over add_bos/eos_token
            return bert_tokenizer(vocab, do_lower_case=config.get("do_lower_case", True),
                                  strip_accents=config.get("strip_accents"),
                                  tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
                                  cls_token=token_text(specials["cls_token"]),
                                  sep_token=token_text(specials["sep_token"]),
                                  clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False),
                                  **names, **common)
        if kind == "LlamaTokenizer":
            return llama_tokenizer(vocab, merges, template=template, legacy=config.get("legacy", False),
                                   add_prefix_space=config.get("add_prefix_space") is not False, **names, **common)
        if kind in ("GPT2Tokenizer", "Qwen2Tokenizer"):
            family = gpt2_tokenizer if kind == "GPT2Tokenizer" else qwen2_tokenizer
            return family(vocab, merges, template=template,
                          add_prefix_space=bool(config.get("add_prefix_space", False)), **names, **common)
        if spec is None:
            raise MissingConfigError(f"{kind} needs tokenizer.json in {folder}")
        if spec["model"].get("type") == "WordPiece":
            return wordpiece_tokenizer_from_json(
                spec, template=template, clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False),
                **names, **common)
        return tokenizer_from_json(spec, template=template, **names, **common)
    except ValueError as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{folder}: {e}") from None
