"""HF's generate options on minivlm: beam search (num_beams, length_penalty, early_stopping,
num_return_sequences), repetition_penalty, no_repeat_ngram_size, min_new_tokens / min_length,
stop_strings, streamers. Every case is compared with transformers' generate on the same weights
(exact ids), on Llama (left-padded batch of 4), OPT via BLIP-2, InstructBLIP (its model card's
settings), LLaVA, LLaVA-NeXT, OneVision, Qwen2-VL and BLIP (its own captioning settings); each option is also shown to change the output, so a no-op could not pass."""
import pytest
import torch

from minivlm.logits_processors import no_repeat_ngram, repetition_penalty
from minivlm.parity import blip as blip_cases
from minivlm.parity import blip2 as blip2_cases
from minivlm.parity import llava as llava_cases
from minivlm.parity import llava_next as llava_next_cases
from minivlm.parity import llava_onevision as onevision_cases
from minivlm.parity import qwen2_vl as qwen2_vl_cases
from minivlm.parity.harness import build_seeded, convert_reference
from minivlm.parity.llama import CASES, left_padded_batch
from minivlm.streamer import TextStreamer, TokenStreamer


@pytest.fixture(scope="module")
def llama():
    """GQA 3:1, head_dim 10, biases; a left-padded batch of 4 prompts (11, 4, 8 and 1 tokens);
    eos ids picked from HF's own greedy continuation so rows finish at different steps."""
    case = next(c for c in CASES if c.name == "gqa-3to1-bias-head_dim-10/generate")
    reference = build_seeded(case.build_reference)
    reference.config.eos_token_id = reference.generation_config.eos_token_id = None
    ids, mask = left_padded_batch(reference.config.vocab_size, torch.Generator().manual_seed(7), lengths=(11, 4, 8, 1))
    free = reference.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10)
    eos = sorted({int(t) for t in free[:, ids.shape[1] + 2:ids.shape[1] + 4].flatten()})
    return convert_reference(reference), reference, dict(input_ids=ids, attention_mask=mask), eos, free


def both(ours, reference, inputs, **kw):
    mine = ours.generate(**inputs, **kw)
    theirs = reference.generate(**inputs, do_sample=False, **kw)
    assert mine.shape == theirs.shape and torch.equal(mine, theirs), (kw, mine, theirs)
    return mine


LLAMA_OPTIONS = {
    "beams-3": dict(num_beams=3),
    "beams-4-eos-pad0": dict(num_beams=4, eos="all", pad_token_id=0),       # HF fills with eos[0] where pad is 0
    "beams-3-one-eos-lp2": dict(num_beams=3, eos="first", length_penalty=2.0),
    "beams-5-early-negative-lp": dict(num_beams=5, eos="all", early_stopping=True, length_penalty=-0.5),
    "beams-3-never-2-returned": dict(num_beams=3, eos="all", early_stopping="never", num_return_sequences=2),
    "repetition-penalty": dict(repetition_penalty=1.5),
    "repetition-penalty-below-1": dict(repetition_penalty=0.7),
    "no-repeat-2gram": dict(no_repeat_ngram_size=2),
    "min-new-tokens": dict(eos="all", min_new_tokens=5),
    "min-length": dict(eos="all", min_length=15),                          # prompt is 11 long: 4 new tokens
    "beams-all-processors": dict(num_beams=3, repetition_penalty=1.3, no_repeat_ngram_size=3, eos="all",
                                 min_new_tokens=3),
}


@pytest.mark.parametrize("name", LLAMA_OPTIONS)
def test_llama_left_padded_batch_equals_hf(llama, name):
    ours, reference, inputs, eos, _ = llama
    kw = dict(LLAMA_OPTIONS[name])
    if "eos" in kw:
        kw["eos_token_id"] = eos if kw.pop("eos") == "all" else eos[:1]
    both(ours, reference, inputs, max_new_tokens=10, **kw)


def test_each_option_changes_the_ids(llama):
    """The cases above are discriminating: every option gives ids other than plain greedy."""
    ours, _, inputs, eos, greedy = llama
    run = lambda **kw: ours.generate(**inputs, max_new_tokens=10, **kw)  # noqa: E731
    for kw in (dict(num_beams=3), dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=2),
               dict(eos_token_id=eos, min_new_tokens=5)):
        out = run(**kw)
        assert out.shape != greedy.shape or not torch.equal(out, greedy), kw
    assert not torch.equal(run(num_beams=3, eos_token_id=eos, length_penalty=2.0),
                           run(num_beams=3, eos_token_id=eos, length_penalty=-2.0))


def test_beams_without_static_cache_and_one_beam_is_greedy(llama):
    ours, _, inputs, eos, greedy = llama
    assert torch.equal(ours.generate(**inputs, max_new_tokens=10, num_beams=4, eos_token_id=eos),
                       ours.generate(**inputs, max_new_tokens=10, num_beams=4, eos_token_id=eos, static_cache=False))
    assert torch.equal(ours.generate(**inputs, max_new_tokens=10, num_beams=1), greedy)


def test_beams_through_the_compiled_decode_step(llama):
    """fast/compiled.py's fixed-shape step reads the cache buffers given each call, so the beam
    reorder (new buffers) reaches it (compile=False: the same step, eager)."""
    from minivlm.fast.compiled import CompiledDecoder
    from minivlm.generation import generate
    ours, _, inputs, eos, _ = llama
    kw = dict(max_new_tokens=10, num_beams=3, eos_token_id=eos, repetition_penalty=1.2)
    assert torch.equal(generate(CompiledDecoder(ours, compile=False), **inputs, **kw), ours.generate(**inputs, **kw))


def test_processors_by_hand():
    scores = torch.tensor([[2.0, -1.0, 0.5, 3.0, -2.0]])
    out = repetition_penalty(scores, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0, -2.0]]  # seen: positive halved, negative doubled
    ids = torch.tensor([[3, 1, 4, 1, 3, 1]])              # suffix (3, 1) was followed by 4: 4 banned
    assert torch.isinf(no_repeat_ngram(torch.zeros(1, 6), ids, 3)).tolist() == [[False] * 4 + [True, False]]
    assert torch.equal(no_repeat_ngram(scores, torch.tensor([[1, 2]]), 3), scores)  # too short to ban


def stop_tokenizer(vocab_size):
    """An HF tokenizer over the model's vocabulary whose text is its pieces glued together: letters,
    space + letter, then two-letter pieces; so stop strings can span tokens and end inside one."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast
    letters = [chr(97 + i) for i in range(26)]
    pieces = letters + [" " + c for c in letters] + [a + b for a in letters for b in letters]
    tok = Tokenizer(models.BPE({p: i for i, p in enumerate(pieces[:vocab_size])}, merges=[]))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_stop_strings_equal_hf(llama):
    """Stop strings taken from HF's own greedy text: one inside a token pair, one across a token
    boundary; rows stop where HF's do (with eos and without, where HF does not pad finished rows)."""
    ours, reference, inputs, eos, greedy = llama
    tok = stop_tokenizer(reference.config.vocab_size)
    new = greedy[:, inputs["input_ids"].shape[1]:]
    # one per row, from its 4th and 5th new tokens; odd rows' end inside the 5th token
    stops = [tok.decode(new[r, 3:5].tolist())[:-1 if r % 2 else None] for r in range(new.shape[0])]
    for kw in (dict(), dict(eos_token_id=eos[-1:]), dict(num_beams=3, eos_token_id=eos)):
        out = both(ours, reference, inputs, max_new_tokens=10, stop_strings=stops, tokenizer=tok, **kw)
        assert out.shape[1] <= inputs["input_ids"].shape[1] + 5  # every row stopped by the 5th token
        if not kw:
            assert torch.equal(out, greedy[:, :out.shape[1]])  # HF pads nothing without eos
    with pytest.raises(ValueError, match="tokenizer"):
        ours.generate(**inputs, stop_strings=["x"])


def test_streamer_sees_the_ids_and_prints_the_text(llama, capsys):
    ours, reference, inputs, _, _ = llama
    tok = stop_tokenizer(reference.config.vocab_size)
    one = {k: v[:1] for k, v in inputs.items()}
    collected = TokenStreamer()
    out = ours.generate(**one, max_new_tokens=6, streamer=collected)
    assert collected.prompt == one["input_ids"].tolist() and collected.ended
    assert [t[0] for t in collected.tokens] == out[0, one["input_ids"].shape[1]:].tolist()
    printer = TextStreamer(tok, skip_prompt=True)
    ours.generate(**one, max_new_tokens=6, streamer=printer)
    assert capsys.readouterr().out == tok.decode(out[0, one["input_ids"].shape[1]:].tolist()) + "\n"
    # our streamer in HF's generate prints the same
    reference.generate(**one, max_new_tokens=6, do_sample=False, streamer=TextStreamer(tok, skip_prompt=True))
    assert capsys.readouterr().out == printer.text + "\n"
    with pytest.raises(ValueError, match="one row"):
        ours.generate(**inputs, max_new_tokens=2, streamer=TextStreamer(tok))


def test_bad_settings(llama):
    ours, _, inputs, _, _ = llama
    for kw, msg in [(dict(num_beams=0), "num_beams"), (dict(num_beams=2, do_sample=True), "beam sampling"),
                    (dict(num_beams=2, streamer=TokenStreamer()), "streamer"),
                    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
                    (dict(num_return_sequences=2), "num_return_sequences"),
                    (dict(num_beams=2, use_cache=False), "use_cache"),
                    (dict(early_stopping="sometimes"), "early_stopping"),
                    (dict(repetition_penalty=0.0), "repetition_penalty"),
                    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
                    (dict(min_new_tokens=-2), "min_new_tokens"),
                    (dict(stop_strings=[""], tokenizer=object()), "stop_strings")]:
        with pytest.raises(ValueError, match=msg):
            ours.generate(**inputs, max_new_tokens=3, **kw)
    with pytest.raises(ValueError, match="attention_mask must hold 0"):
        ours.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"] * 2)


def family_pair(cases, name):
    case = next(c for c in cases if c.name == name)
    reference = build_seeded(case.build_reference)
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(0))
    return convert_reference(reference), reference, inputs


@pytest.mark.parametrize("name, options", [
    ("blip2-opt-freq2/generate", dict(num_beams=3, max_new_tokens=8)),
    ("blip2-opt-freq2/generate", dict(repetition_penalty=1.5, no_repeat_ngram_size=2, max_new_tokens=8)),
    ("blip2-opt-postln-untied-no-qkv-bias-freq3/generate", dict(num_beams=4, length_penalty=0.5, early_stopping=True,
                                                               eos=True, max_new_tokens=8)),
    # InstructBLIP's model card: num_beams=5, repetition_penalty=1.5, length_penalty=1.0, min_length=1, max_length
    ("instructblip-llama-freq2/generate", dict(num_beams=5, repetition_penalty=1.5, length_penalty=1.0, min_length=1,
                                               max_length=22, eos=True)),
    ("instructblip-llama-freq2/generate", dict(min_new_tokens=4, no_repeat_ngram_size=3, max_new_tokens=8, eos=True)),
])
def test_blip2_and_instructblip_equal_hf(name, options):
    ours, reference, inputs = family_pair(blip2_cases.CASES, name)
    kw = dict(options)
    if kw.pop("eos", False):  # an eos met early by HF's greedy reply, so rows and beams finish at different steps
        free = reference.generate(**inputs, do_sample=False, max_new_tokens=4)
        kw["eos_token_id"] = sorted({int(t) for t in free[:, -3:].flatten()})[:2]
    out = both(ours, reference, inputs, **kw)
    assert differs_from_greedy(ours, inputs, out, kw)


def differs_from_greedy(ours, inputs, out, kw):
    """The options changed the ids (so the equality above tested them)."""
    plain = {k: v for k, v in kw.items() if k in ("max_new_tokens", "max_length", "eos_token_id")}
    greedy = ours.generate(**inputs, **plain)
    return greedy.shape != out.shape or not torch.equal(greedy, out)


@pytest.mark.parametrize("options", [dict(num_beams=3), dict(num_beams=2, repetition_penalty=1.4, min_new_tokens=6),
                                     dict(no_repeat_ngram_size=2, repetition_penalty=1.2)])
def test_llava_equals_hf(options):
    ours, reference, inputs = family_pair(llava_cases.CASES, "default-layer-2-gqa/generate")
    out = both(ours, reference, inputs, max_new_tokens=8, **options)
    assert differs_from_greedy(ours, inputs, out, dict(max_new_tokens=8))


@pytest.mark.parametrize("name, options", [("two-images-tied-mha/generate", dict(num_beams=3)),
                                           ("two-images-tied-mha/generate", dict(num_beams=2, repetition_penalty=1.3)),
                                           ("odd-grids-batch/generate", dict(num_beams=3))])
def test_qwen2_vl_beams_equal_hf(name, options):
    """M-RoPE positions (3, B, L) copied to the beams. (On odd-grids-batch with num_beams=2 and
    repetition_penalty=1.3 transformers' ids differ from ours after two beams swap; ours equal a
    full uncached forward of the beam's sequence there, HF's logits are 1.5 off: docs/generation.md.)"""
    ours, reference, inputs = family_pair(qwen2_vl_cases.CASES, name)
    out = both(ours, reference, inputs, max_new_tokens=8, **options)
    assert differs_from_greedy(ours, inputs, out, dict(max_new_tokens=8))


@pytest.mark.parametrize("name, options", [
    # BLIP's own captioning (salesforce/BLIP, predict.py): beam search, num_beams=3, max_length=20, min_length=5
    ("caption-wide-vision-unprompted", dict(num_beams=3, max_length=20, min_length=5)),
    ("caption-padded-prompts", dict(num_beams=2, repetition_penalty=1.4, length_penalty=0.5, max_new_tokens=8)),
    ("vqa-labels-answer", dict(num_beams=3, max_new_tokens=8)),
    ("caption-right-pad-prompted", dict(no_repeat_ngram_size=2, min_new_tokens=4, max_new_tokens=8)),
])
def test_blip_equals_hf(name, options):
    """BLIP's BERT decoder: the cross-attention's cached keys/values are copied and reordered by beam too."""
    case = next(c for c in blip_cases.CASES if c.name == name)
    reference = build_seeded(case.build_reference)
    inputs = case.generate_inputs(case.make_inputs(reference, torch.Generator().manual_seed(0)))
    ours = convert_reference(reference)
    out = both(ours, reference, inputs, **options)
    assert differs_from_greedy(ours, inputs, out, options)


@pytest.mark.parametrize("cases, name", [(llava_next_cases, "odd-sizes-several-per-prompt-layer-list/generate"),
                                         (onevision_cases, "several-images-and-videos-odd-grid/generate")])
def test_llava_next_and_onevision_beams_equal_hf(cases, name):
    """Several images (and videos) per prompt: the prefill runs once per prompt and its cache is
    copied to the beams, so pixel inputs never need expanding."""
    ours, reference, inputs = family_pair(cases.CASES, name)
    out = both(ours, reference, inputs, max_new_tokens=8, num_beams=2, repetition_penalty=1.3)
    assert differs_from_greedy(ours, inputs, out, dict(max_new_tokens=8))
