"""minivlm.generation: cached == uncached decoding, greedy and eos handling equal to HF's generate on
left-padded batches, inputs_embeds prefill, reproducible sampling and hand-checked top-k / top-p."""

import pytest
import torch

from minivlm.generation import generate, next_tokens, prompt_positions, top_k_filter, top_p_filter
from minivlm.parity.harness import build_seeded, convert_reference
from minivlm.parity.llama import CASES, left_padded_batch


@pytest.fixture(scope="module")
def pair():
    """A GQA 3:1 model with head_dim 10 and biases, HF and ours, eos left unset (set per test)."""
    case = next(c for c in CASES if c.name == "gqa-3to1-bias-head_dim-10/generate")
    reference = build_seeded(case.build_reference)
    reference.config.eos_token_id = reference.generation_config.eos_token_id = None
    ours = convert_reference(reference)
    return ours, reference


@pytest.fixture(scope="module")
def prompt(pair):
    return left_padded_batch(pair[0].config.vocab_size, torch.Generator().manual_seed(7), lengths=(11, 4, 8, 1))


def hf_generate(reference, ids, mask, **kw):
    return reference.generate(input_ids=ids, attention_mask=mask, do_sample=False, **kw)


def recording(model, log):
    """The model, but every call's last-position logits are kept."""
    def step(**kw):
        out = model(**kw)
        log.append(out.logits[:, -1])
        return out
    return step


def test_prompt_positions_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    want = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])
    assert torch.equal(prompt_positions(mask), want)


@torch.no_grad()
def test_cached_equals_uncached(pair, prompt):
    ours, _ = pair
    ids, mask = prompt
    with_cache, without = [], []
    a = generate(recording(ours, with_cache), ids, mask, max_new_tokens=12, use_cache=True)
    b = generate(recording(ours, without), ids, mask, max_new_tokens=12, use_cache=False)
    assert torch.equal(a, b)
    assert len(with_cache) == len(without) == 12
    for step, (x, y) in enumerate(zip(with_cache, without)):
        assert (x - y).abs().max() <= 1e-5, f"step {step}: cached and uncached logits differ"


@torch.no_grad()
def test_greedy_equals_hf_left_padded(pair, prompt):
    ours, reference = pair
    ids, mask = prompt
    mine = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20)
    theirs = hf_generate(reference, ids, mask, max_new_tokens=20)
    assert mine.shape == theirs.shape == (4, 31)
    assert torch.equal(mine, theirs)


@torch.no_grad()
def test_eos_stops_rows_like_hf(pair, prompt):
    """eos picked from row 0's own continuation: row 0 stops early, padded with pad_token_id, as HF does."""
    ours, reference = pair
    ids, mask = prompt
    free = hf_generate(reference, ids, mask, max_new_tokens=10)[:, ids.shape[1]:]
    eos = int(free[0, 2])  # row 0 says it at its third new token (perhaps other rows too)
    for kw in (dict(eos_token_id=eos, pad_token_id=1), dict(eos_token_id=[66, eos])):  # pad defaults to eos[0]
        mine = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, **kw)
        theirs = hf_generate(reference, ids, mask, max_new_tokens=10, **kw)
        assert torch.equal(mine, theirs), kw
        new = mine[:, ids.shape[1]:]
        pad = kw.get("pad_token_id", 66)
        assert new[0, 2] == eos and (new[0, 3:] == pad).all()


@torch.no_grad()
def test_all_rows_finished_stops_early_like_hf(pair, prompt):
    ours, reference = pair
    ids, mask = prompt
    free = hf_generate(reference, ids, mask, max_new_tokens=10)[:, ids.shape[1]:]
    eos = sorted({int(t) for t in free[:, :3].flatten()})  # every row meets one within 3 steps
    mine = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, eos_token_id=eos)
    theirs = hf_generate(reference, ids, mask, max_new_tokens=10, eos_token_id=eos)
    assert mine.shape[1] <= ids.shape[1] + 3
    assert torch.equal(mine, theirs)


@torch.no_grad()
def test_inputs_embeds_prefill_like_hf(pair, prompt):
    """LLaVA's path: prefill on embeddings, decode on ids; only the new tokens come back, as in HF."""
    ours, reference = pair
    ids, mask = prompt
    embeds = ours.get_input_embeddings()(ids)
    mine = ours.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=8)
    theirs = reference.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert torch.equal(mine, theirs)
    assert torch.equal(mine, ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8)[:, ids.shape[1]:])


def test_top_k_filter_by_hand():
    logits = torch.tensor([[1.0, 5.0, 3.0, 3.0, -2.0], [0.0, 0.1, 0.2, 0.3, 0.4]])
    out = top_k_filter(logits, 2)
    inf = float("-inf")
    assert torch.equal(out, torch.tensor([[inf, 5.0, 3.0, 3.0, inf], [inf, inf, inf, 0.3, 0.4]]))  # ties kept


def test_top_p_filter_by_hand():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(top_p_filter(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.4) == [False, True, False, False]     # 0.5 alone reaches 0.4
    assert kept(0.75) == [False, True, False, True]     # 0.5 + 0.3 = 0.8 >= 0.75
    assert kept(0.9) == [True, True, False, True]       # needs 0.15 too: 0.95
    assert kept(1.0) == [True, True, True, True]
    assert kept(1e-6) == [False, True, False, False]    # the top token always stays


def test_filters_equal_hf_warpers():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 3
    for k in (1, 5, 17):
        assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(k)(None, logits.clone()))
    for p in (0.3, 0.7, 0.95):
        assert torch.equal(torch.isinf(top_p_filter(logits, p)), torch.isinf(TopPLogitsWarper(p)(None, logits.clone())))


def test_sampling_respects_top_k_and_top_p():
    logits = torch.tensor([[2.0, 1.9, 0.0, -1.0, 1.8, -3.0]]).repeat(500, 1)
    seen = set(next_tokens(logits, True, top_k=2, generator=torch.Generator().manual_seed(0)).tolist())
    assert seen == {0, 1}
    seen = set(next_tokens(logits, True, top_p=0.5, temperature=0.7, generator=torch.Generator().manual_seed(0)).tolist())
    top = logits[0].div(0.7).softmax(-1)  # 0: .42, 1: .37 -> mass .79 >= 0.5 after two tokens
    assert top[0] < 0.5 <= top[0] + top[1] and seen == {0, 1}
    assert set(next_tokens(logits, True, top_k=1).tolist()) == {0}


@torch.no_grad()
def test_sampling_reproducible_with_generator(pair, prompt):
    ours, _ = pair
    ids, mask = prompt
    run = lambda seed, **kw: ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=True,  # noqa: E731
                                           generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(run(3, temperature=1.3, top_k=20, top_p=0.9), run(3, temperature=1.3, top_k=20, top_p=0.9))
    assert not torch.equal(run(3, temperature=5.0), run(4, temperature=5.0))
    greedy = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12)
    assert torch.equal(run(5, top_k=1), greedy)  # one candidate left: sampling is greedy


def test_bad_settings(pair, prompt):
    ours, _ = pair
    ids, mask = prompt
    for kw, msg in [(dict(max_new_tokens=-1), "max_new_tokens"), (dict(temperature=0.0), "temperature"),
                    (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p")]:
        with pytest.raises(ValueError, match=msg):
            ours.generate(input_ids=ids, attention_mask=mask, **kw)
    with pytest.raises(ValueError, match="needs input_ids"):
        generate(ours, inputs_embeds=torch.randn(1, 3, 48), use_cache=False)


def test_generation_config_json_sets_eos_and_pad_like_hf(pair, prompt, tmp_path):
    """A checkpoint whose generation_config.json names eos / pad ids the model config does not (as
    llava-hf folders do for pad): both libraries read them, so finished rows get the same fill."""
    import json
    import transformers
    import weights_convert
    _, reference = pair
    ids, mask = prompt
    free = hf_generate(reference, ids, mask, max_new_tokens=12)
    eos = int(free[0, ids.shape[1] + 2])          # a token row 0 makes early: it will stop there
    pad = next(t for t in range(3, 60) if t not in free.tolist()[0] and t != eos)
    reference.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos, "pad_token_id": pad}))
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ours = weights_convert.load_pretrained(tmp_path, dtype=torch.float32)
    assert ours.config.eos_token_id != eos and ours.generation_config == {"eos_token_id": eos, "pad_token_id": pad}
    expected = hf_generate(hf, ids, mask, max_new_tokens=12)
    assert (expected[0, ids.shape[1] + 3:] == pad).all()  # the case is discriminating: row 0 padded with `pad`
    assert torch.equal(ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12), expected)


def test_max_length_counts_the_prompt_like_hf(pair, prompt):
    ours, reference = pair
    ids, mask = prompt
    expected = hf_generate(reference, ids, mask, max_length=ids.shape[1] + 5)
    assert expected.shape[1] == ids.shape[1] + 5
    assert torch.equal(ours.generate(input_ids=ids, attention_mask=mask, max_length=ids.shape[1] + 5), expected)
    with pytest.raises(ValueError, match="leaves no room"):
        ours.generate(input_ids=ids, attention_mask=mask, max_length=ids.shape[1])
