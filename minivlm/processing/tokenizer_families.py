"""The tokenizer families minivlm reads, as pipelines of tokenizer.json components.

- CLIP (HF CLIPTokenizer): NFC, whitespace runs -> one space, lower-case; split into words, digits
  and punctuation (whitespace dropped); byte-level; BPE whose word-final symbols end in "</w>";
  <|startoftext|> ... <|endoftext|> around every text. Decoding turns "</w>" back into spaces.
- Llama 2 (HF LlamaTokenizer, SentencePiece-style BPE): spaces become "▁", one "▁" prefixed to the
  text, no splitting into words; characters missing from the vocabulary fall back to <0xNN> bytes.
- GPT-2 (HF GPT2Tokenizer, OPT's and so BLIP-2's): byte-level BPE with no normaliser, GPT-2's word
  regex (spaces stay glued to the next word), no unk token; OPT's files set add_bos_token (</s> first).
- Qwen2 (HF Qwen2Tokenizer: Qwen2, Qwen2-VL, LLaVA-OneVision): GPT-2's with NFC and Qwen2's regex
  (Llama 3's, but one digit per piece); no bos.
- BERT (HF BertTokenizer, BLIP's text side): WordPiece, rebuilt from the vocabulary like the two
  above (wordpiece.py); a tokenizer.json with a WordPiece model and no such class is read as is.
- Any other tokenizer.json (Llama 3's PreTrainedTokenizerFast): its own components, read as is.

transformers 5 rebuilds CLIP, Llama 2 and BERT from the class (only vocab, merges and the post-processor
come from the file), so we do the same: the class named in tokenizer_config.json decides.
"""
from .bpe import BPE
from .decoding import decoder_from_json
from .pretokenize import CLIP_PATTERN, QWEN2_PATTERN, normalizer_from_json, pretokenizer_from_json
from .tokenizer import Tokenizer, template_from_json
from .wordpiece import (WordPiece, bert_normalizer, bert_pre_tokenizer, clean_up_tokenization, wordpiece_decoder,
                        wp_decoder_from_json, wp_normalizer_from_json, wp_pretokenizer_from_json)

CLIP_NORMALIZER = {"type": "Sequence", "normalizers": [
    {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "}, {"type": "Lowercase"}]}
CLIP_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": True},
    {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}]}


def clip_decode_cleanup(text):
    # HF CLIPTokenizer wraps its decoder: every "</w>" becomes a space, then the ends are stripped.
    return text.replace("</w>", " ").strip()


def clip_tokenizer(vocab, merges, bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                   pad_token="<|endoftext|>", added_tokens=(), **kwargs):
    model = BPE(vocab, merges, unk_token=unk_token, end_of_word_suffix="</w>")
    token_id = {t.content: t.id for t in added_tokens} | model.vocab
    for name, token in (("bos_token", bos_token), ("eos_token", eos_token)):
        if token not in token_id:
            raise ValueError(f"CLIP's {name} {token!r} is not in the vocabulary")
    return Tokenizer(model, normalizer_from_json(CLIP_NORMALIZER), pretokenizer_from_json(CLIP_PRE_TOKENIZER),
                     decoder_from_json({"type": "ByteLevel"}),
                     template=[token_id[bos_token], "A", token_id[eos_token]], added_tokens=added_tokens,
                     bos_token=bos_token, eos_token=eos_token, pad_token=pad_token, unk_token=unk_token,
                     decode_cleanup=clip_decode_cleanup, **kwargs)


def llama_tokenizer(vocab, merges, template=("A",), add_prefix_space=True, legacy=False, bos_token="<s>",
                    eos_token="</s>", unk_token="<unk>", **kwargs):
    """HF LlamaTokenizer's pipeline. prepend_scheme: "first" (only the text's start gets "▁") unless
    legacy, then "always" (also after every special token); "never" without add_prefix_space."""
    scheme = ("first" if not legacy else "always") if add_prefix_space else "never"
    decoders = [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
                {"type": "Fuse"}]
    if add_prefix_space:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    # HF builds this BPE without an unk token (byte fallback covers unknown characters).
    model = BPE(vocab, merges, byte_fallback=True, fuse_unk=True)
    return Tokenizer(model, normalizer_from_json(None),
                     pretokenizer_from_json({"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme,
                                             "split": False}),
                     decoder_from_json({"type": "Sequence", "decoders": decoders}), template=template,
                     bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, **kwargs)


def gpt2_tokenizer(vocab, merges, template=("A",), add_prefix_space=False, normalizer=None, split_pattern=None,
                   **kwargs):
    """HF GPT2Tokenizer's pipeline: ByteLevel pre-tokenizer (GPT-2's regex), plain BPE, ByteLevel decoder.
    With split_pattern, a Split (isolated) on that regex replaces the ByteLevel one's (Qwen2)."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "use_regex": split_pattern is None}
    pre = byte_level if split_pattern is None else {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": split_pattern}, "behavior": "Isolated", "invert": False}, byte_level]}
    return Tokenizer(BPE(vocab, merges), normalizer_from_json(normalizer), pretokenizer_from_json(pre),
                     decoder_from_json({"type": "ByteLevel"}), template=template, **kwargs)


def qwen2_tokenizer(vocab, merges, **kwargs):
    """HF Qwen2Tokenizer's pipeline (Qwen2, Qwen2-VL, LLaVA-OneVision): GPT-2's byte-level BPE with an NFC
    normaliser and Qwen2's split regex (QWEN2_PATTERN: digits one by one). No bos; a BPE without unk,
    and invalid UTF-8 decodes to U+FFFD (HF's errors="replace")."""
    return gpt2_tokenizer(vocab, merges, normalizer={"type": "NFC"}, split_pattern=QWEN2_PATTERN, **kwargs)


def bpe_from_json(model):
    """tokenizer.json's "model" (type BPE) -> our BPE."""
    if model.get("type", "BPE") != "BPE":
        raise ValueError(f"tokenizer.json model type {model.get('type')!r} is not supported (minivlm reads BPE)")
    if model.get("dropout"):
        raise ValueError("BPE dropout makes tokenisation random; minivlm reads deterministic tokenizers only")
    return BPE(model["vocab"], merges_from_json(model["merges"]), unk_token=model.get("unk_token"),
               end_of_word_suffix=model.get("end_of_word_suffix"),
               continuing_subword_prefix=model.get("continuing_subword_prefix"),
               byte_fallback=model.get("byte_fallback", False), fuse_unk=model.get("fuse_unk", False),
               ignore_merges=model.get("ignore_merges", False))


def merges_from_json(merges):
    """Merges as "a b" strings (older files) or [a, b] pairs (newer) -> pairs."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def tokenizer_from_json(spec, template=None, **kwargs):
    """A whole tokenizer.json, read as is (what PreTrainedTokenizerFast does)."""
    return Tokenizer(bpe_from_json(spec["model"]), normalizer_from_json(spec.get("normalizer")),
                     pretokenizer_from_json(spec.get("pre_tokenizer")), decoder_from_json(spec.get("decoder")),
                     template=template if template is not None else template_from_json(spec.get("post_processor")),
                     **kwargs)


# --- BERT's WordPiece (BLIP's text side) -------------------------------------------------------

def bert_tokenizer(vocab, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True, cls_token="[CLS]",
                   sep_token="[SEP]", unk_token="[UNK]", template=None, clean_up_tokenization_spaces=False,
                   added_tokens=(), **kwargs):
    """HF BertTokenizer's pipeline, rebuilt from the vocabulary and the class options (transformers 5
    ignores tokenizer.json's normalizer, pre-tokenizer and decoder for this class): BertNormalizer,
    BertPreTokenizer, WordPiece with "##", and [CLS] ... [SEP] around every text."""
    model = WordPiece(vocab, unk_token=unk_token)
    if template is None:
        token_id = {t.content: t.id for t in added_tokens} | model.vocab
        for name, token in (("cls_token", cls_token), ("sep_token", sep_token)):
            if token not in token_id:
                raise ValueError(f"BERT's {name} {token!r} is not in the vocabulary")
        template = [token_id[cls_token], "A", token_id[sep_token]]
    chain_ = wordpiece_decoder("##", cleanup=True)
    return Tokenizer(model, bert_normalizer(True, tokenize_chinese_chars, strip_accents, do_lower_case),
                     bert_pre_tokenizer, lambda tokens: "".join(chain_(list(tokens))), template=template,
                     added_tokens=added_tokens, unk_token=unk_token,
                     decode_cleanup=clean_up_tokenization if clean_up_tokenization_spaces else None, **kwargs)


def wordpiece_tokenizer_from_json(spec, template=None, clean_up_tokenization_spaces=False, **kwargs):
    """A tokenizer.json whose model is WordPiece, read as is (PreTrainedTokenizerFast)."""
    return Tokenizer(WordPiece.from_json(spec["model"]), wp_normalizer_from_json(spec.get("normalizer")),
                     wp_pretokenizer_from_json(spec.get("pre_tokenizer")), wp_decoder_from_json(spec.get("decoder")),
                     template=template if template is not None else template_from_json(spec.get("post_processor")),
                     decode_cleanup=clean_up_tokenization if clean_up_tokenization_spaces else None, **kwargs)
