"""The generation memory measurement (minivlm/bench/memory.py) measures what it says.

The instrument is checked on children whose memory is known by construction: a "generate" that
holds 200 MiB at once (one tensor, then 64 KiB pieces from glibc's heap) must read ~200 MiB above
its baseline, in RSS and in the profiler's tensor count, and one that holds nothing must read ~0.
Then the toy bench: every implementation runs, gives transformers' greedy ids, and its tensor peak
is at least the KV cache that any implementation must hold at the end (computed by hand).
"""
import sys

import pytest
import torch

from minivlm.bench.speed import TOY_LLAMA
from minivlm.bench.memory import (IMPLS, format_memory_table, generate_fn, load, run_child, run_memory_bench,
                                  save_reference, tensor_peak)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")


@pytest.mark.parametrize("pieces", [False, True], ids=["one-tensor", "heap-pieces"])
def test_a_known_200_mib_reads_200_mib(pieces):
    r = run_child({"calibrate_mb": 200, "pieces": pieces})
    for call in r["runs"]:  # each call: freed at the end, so the next call's baseline is back down
        assert 198 <= call["peak"] - call["base"] <= 212, r
    assert 199 <= r["tensors_MB"] <= 201, r
    assert r["process_peak_MB"] >= r["imported_MB"] + 198, r


def test_nothing_held_reads_about_zero():
    r = run_child({"calibrate_mb": 0})
    assert all(call["peak"] - call["base"] < 4 for call in r["runs"]), r
    assert r["tensors_MB"] < 0.01, r


def test_toy_bench_rows_are_sane():
    batch, prompt, new = 4, 256, 64
    rows = run_memory_bench(["decode"], toy=True, batch=batch, prompt_len=prompt, new_tokens=new, log=lambda *_: None)
    assert [r["impl"] for r in rows] == list(IMPLS)
    # K and V of every layer for every position at the end: a floor no implementation can go under.
    head_dim = TOY_LLAMA["hidden_size"] // TOY_LLAMA["num_attention_heads"]
    kv_cache = (TOY_LLAMA["num_hidden_layers"] * 2 * batch * TOY_LLAMA["num_key_value_heads"] * (prompt + new - 1)
                * head_dim * 4) / 2 ** 20
    for r in rows:
        assert kv_cache <= r["tensors_MB"] < kv_cache + 20, (r, kv_cache)
        assert 0 <= r["steady_MB"] < 100 and 0 <= r["first_MB"] < 100, r
        assert r["process_peak_MB"] >= r["model_MB"] > 100, r  # torch alone is > 100 MiB resident
        assert r["ids_equal"] in (None, True), r  # None: transformers' own row
    table = format_memory_table(rows)
    assert table.count("| decode |") == len(IMPLS)


@pytest.mark.parametrize("static_cache", [True, False], ids=["static-cache", "growing-cache"])
def test_generate_holds_no_more_tensors_than_transformers(static_cache, tmp_path):
    """Issue 12's memory target at toy size, on the exact (profiler) count: at its peak, minivlm's
    generate holds no more in torch tensors than transformers' for the same prompt and length."""
    # full-width KV heads and as many new tokens as prompt ones: the cache's share of the peak shows
    shape = dict(TOY_LLAMA, num_hidden_layers=4, num_key_value_heads=4, intermediate_size=512)
    save_reference(shape, torch.float32, tmp_path)
    reference, ours = load("transformers", tmp_path, torch.float32), load("minivlm", tmp_path, torch.float32)
    ids = torch.randint(0, TOY_LLAMA["vocab_size"], (4, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs, their_peak = tensor_peak(generate_fn("transformers", reference, ids, 128))
        mine, my_peak = tensor_peak(generate_fn(IMPLS[1] if static_cache else IMPLS[2], ours, ids, 128))
    assert torch.equal(mine, theirs)
    assert my_peak <= their_peak, (my_peak, their_peak)
