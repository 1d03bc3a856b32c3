"""The kernel choices the default paths make on *this* CPU, checked against the readable path.

The project's machines differ (Intel with AMX, AMD Zen 4 with AVX-512 bf16, AVX2-only parts), and a
route that gives F.linear's bits on one gave other bits on another (issue 22). These tests take
seconds and exercise every dispatch a default decode takes on the machine they run on, so a CPU
where a route is not exact fails here, by name, before the long parity tests do.
"""
import copy

import pytest
import torch
from torch.nn import functional as F

from minivlm.blocks import StaticKVCache
from minivlm.fast import cpu, fuse_projections, quantize_int8, unfuse_projections
from minivlm.parity import llama as llama_cases
from minivlm.parity.harness import build_seeded, convert_reference


def test_cpu_info_names_the_machine():
    info = cpu.cpu_info()
    assert info["model"] and info["isa"] in {"AMX", "AVX-512 bf16", "AVX-512", "AVX2", "other"}
    assert info["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["model"] in cpu.cpu_summary()


def test_probe_keeps_f_linear_where_the_matvec_kernel_differs(monkeypatch):
    """A kernel that is off by one bf16 unit is never routed to, however fast it is; the switch
    turns the route off; dtypes other than bf16 never take it."""
    weight = torch.randn(48, 32).bfloat16()
    monkeypatch.setenv(cpu.ENV_SWITCH, "on")
    cpu._probe.cache_clear()
    monkeypatch.setattr(cpu, "_matvec", lambda w, v: torch.mv(w, v).float().add(1e-2).to(w.dtype))
    try:
        assert not cpu.matvec_route_ok(torch.bfloat16, weight)
    finally:
        cpu._probe.cache_clear()
    monkeypatch.setenv(cpu.ENV_SWITCH, "off")
    assert not cpu.matvec_route_ok(torch.bfloat16, weight)
    monkeypatch.delenv(cpu.ENV_SWITCH)
    assert not cpu.matvec_route_ok(torch.bfloat16, weight, bias=torch.zeros(48).bfloat16())  # addmv: never
    assert not cpu.matvec_route_ok(torch.float32, weight.float())
    assert not cpu.matvec_route_ok(torch.float16, weight.half())


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    case = next(c for c in llama_cases.CASES if c.name == "gqa-2to1-untied-llama3-rope/generate")
    reference = build_seeded(case.build_reference)
    return reference, convert_reference(reference, tmp_path_factory.mktemp("llama"))


def greedy(model, prompt, n=6):
    return model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, eos_token_id=None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_default_decode_dispatch_equals_the_readable_path(llama, dtype, monkeypatch):
    """The default decode (batch 1: every projection one row; whatever routes the probe chose here)
    gives the logits of F.linear everywhere, bit for bit; fused projections stay within the fp32
    budget (bf16: the same greedy ids are not promised, the logits are within bf16 rounding)."""
    reference, ours = (copy.deepcopy(m).to(dtype) for m in llama)
    prompt = torch.randint(3, ours.config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(prompt)
    default = ours(input_ids=prompt, attention_mask=mask).logits
    step_default = greedy(ours, prompt)
    monkeypatch.setenv(cpu.ENV_SWITCH, "off")
    assert torch.equal(ours(input_ids=prompt, attention_mask=mask).logits, default)
    assert torch.equal(greedy(ours, prompt), step_default)
    assert torch.equal(step_default, greedy(reference, prompt)) or dtype == torch.bfloat16
    monkeypatch.delenv(cpu.ENV_SWITCH)
    fuse_projections(ours)
    try:
        fused = ours(input_ids=prompt, attention_mask=mask).logits
        budget = 1e-5 if dtype == torch.float32 else 0.05 * default.abs().max().item()
        assert (fused.float() - default.float()).abs().max() <= budget
    finally:
        unfuse_projections(ours)


@torch.no_grad()
def test_int8_dispatch_runs_and_agrees_here(llama):
    """torch's int8 kernel is a different code path per CPU: on this one it runs, and its next-token
    pick agrees with the float model's on most positions (the full budget is test_fast_decode's)."""
    _, ours = llama
    prompt = torch.randint(3, ours.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(6))
    int8 = quantize_int8(copy.deepcopy(ours))
    a = ours(input_ids=prompt).logits.argmax(-1)
    b = int8(input_ids=prompt).logits.argmax(-1)
    assert (a == b).float().mean() >= 0.8
    cache = StaticKVCache(room=3)
    assert int8(input_ids=prompt, past_key_values=cache, use_cache=True).logits.isfinite().all()


def test_no_route_in_linear_when_compiling(monkeypatch):
    """Under torch.compile the route is never taken (inductor rewrites mv into a slower loop)."""
    from minivlm.fast.matvec import takes_matvec
    monkeypatch.setenv(cpu.ENV_SWITCH, "on")
    w = torch.randn(8, 4).bfloat16()
    x = torch.randn(1, 4).bfloat16()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not takes_matvec(x, w)
