"""The six bugs found by reading the speed work (issue 28), each held by a test that failed before.

1. Qwen2.5-VL's windowed tower built an index on the CPU beside tensors on the model's device.
   The meta device stands in for a GPU: any tensor made on the CPU meets a meta one and raises.
2. Under bf16 autocast with fp32 weights the residual stream must stay fp32 (x + f(x) promotes).
3. The torch floor in pyproject.toml is what the code needs (sdpa's enable_gqa: torch 2.5).
4. The vision RoPE rotates in float32 even for a bf16 tower, as transformers does.
5. int8 weights and fused projections compose in either order; cross-attention is never fused.
6. CompiledDecoder: a step that raises leaves the cache as it was; the step never moves inv_freq.
"""
import copy
import re
from pathlib import Path

import pytest
import torch

from minivlm.models.qwen2_vl import qwen2_vl_vision_config
from minivlm.parity import llama as llama_cases
from minivlm.parity.harness import build_seeded, convert_reference
from minivlm import vision

ROOT = Path(__file__).resolve().parents[1]


def tiny_qwen2_5_tower(**overrides):
    settings = dict(image_size=4, patch_size=4, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=40,
                    hidden_act="silu", merger_size=24, norm="rms", gated_mlp=True, window_size=16,
                    full_attention_layers=(1,))
    cfg = qwen2_vl_vision_config(**{**settings, **overrides})
    torch.manual_seed(0)
    tower = getattr(vision, "PackedVisionTransformer", vision.VisionTransformer)(cfg).eval()  # before issue 28: one class
    return tower


def packed_forward(tower, pixels, grid):
    return tower.forward_packed(pixels, grid) if isinstance(tower, vision.VisionTransformer) else tower(pixels, grid)


@torch.no_grad()
def test_1_windowed_vision_tower_runs_on_the_models_device():
    """The whole tower and its pixels on the meta device (a stand-in for CUDA: nothing real to read),
    the grid on the CPU as the processor returns it: every index and RoPE table must follow the
    patches' device, or a meta tensor meets a CPU one and torch refuses."""
    tower = tiny_qwen2_5_tower().to("meta")
    grid = torch.tensor([[1, 6, 8], [2, 4, 4]])
    n = int(grid.prod(-1).sum())
    pixels = torch.empty(n, 3 * 2 * 4 * 4, device="meta")
    out = packed_forward(tower, pixels, grid)
    assert out.last_hidden_state.device.type == "meta" and out.last_hidden_state.shape == (n, 32)
    assert out.pooler_output.device.type == "meta" and out.pooler_output.shape == (n // 4, 24)


def tiny_llama(tmp_path, case_name="gqa-3to1-bias-head_dim-10/generate"):
    case = next(c for c in llama_cases.CASES if c.name == case_name)
    reference = build_seeded(case.build_reference)
    ours = convert_reference(reference, tmp_path)
    return reference, ours, case.make_inputs(reference, torch.Generator().manual_seed(0))


def test_2_residual_stream_stays_fp32_under_bf16_autocast(tmp_path):
    """Standard autocast: a sublayer's matmuls run in bf16, but x + f(x) with x fp32 is fp32, so the
    residual stream is not rounded to bf16 at every sublayer. Decoder layers and encoder layers."""
    from minivlm.blocks.transformer import EncoderLayer
    _, ours, inputs = tiny_llama(tmp_path)
    ours.train()
    seen = []
    hooks = [layer.register_forward_hook(lambda m, a, o: seen.append(o.dtype)) for layer in ours.model.layers]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours(**inputs)
        encoder_out = EncoderLayer(16, 4, 24)(torch.randn(2, 3, 16))
    for h in hooks:
        h.remove()
    assert seen and all(d == torch.float32 for d in seen), seen
    assert encoder_out.dtype == torch.float32


def test_3_torch_floor_is_what_the_code_needs():
    """sdpa's enable_gqa (blocks/attention.py) arrived in torch 2.5: the declared floor says so."""
    text = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=(\d+)\.(\d+)', text)
    assert floor, "pyproject.toml declares no torch floor"
    assert (int(floor[1]), int(floor[2])) >= (2, 5), f"torch>={floor[1]}.{floor[2]} is below 2.5 (enable_gqa)"
    assert "enable_gqa" in (ROOT / "minivlm/blocks/attention.py").read_text()  # the reason for the floor


@torch.no_grad()
def test_4_bf16_vision_rope_rotates_in_float32():
    """transformers' apply_rotary_pos_emb_vision upcasts q, k and cos / sin to fp32, rotates, casts
    back. What a bf16 tower's first attention does with the rope it is handed must equal HF's
    function on the same bf16 q, k and fp32 cos, sin, bit for bit."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    from minivlm.blocks.attention import split_heads
    from minivlm.blocks.rotary import apply_rotary, vision_rope_2d
    from minivlm.vision.packed import patch_positions
    tower = tiny_qwen2_5_tower(window_size=None, full_attention_layers=()).to(torch.bfloat16)
    grid = torch.tensor([[1, 4, 6]])
    pixels = torch.randn(24, 96, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    attn, seen = tower.encoder.layers[0].attn, {}
    handle = attn.register_forward_pre_hook(lambda m, a, kw: seen.update(x=a[0], rope=kw["rope"]), with_kwargs=True)
    packed_forward(tower, pixels, grid)
    handle.remove()
    q, k = (split_heads(proj(seen["x"]), 8) for proj in (attn.q_proj, attn.k_proj))  # (1, H, N, Dh) bf16
    ours_q, ours_k = apply_rotary(q, k, *seen["rope"])
    cos, sin = vision_rope_2d(*patch_positions(grid, 2), 8, tower.config.rope_theta)  # (N, Dh) fp32
    ref_q, ref_k = apply_rotary_pos_emb_vision(q[0].transpose(0, 1), k[0].transpose(0, 1), cos, sin)  # (N, H, Dh)
    assert ours_q.dtype == torch.bfloat16
    assert torch.equal(ours_q[0].transpose(0, 1), ref_q) and torch.equal(ours_k[0].transpose(0, 1), ref_k)


@torch.no_grad()
def fusion():
    """(fuse, unfuse): fast/fused.py's swap (before issue 28: blocks/fused.py's switch)."""
    from minivlm import fast
    if hasattr(fast, "fuse_projections"):
        return fast.fuse_projections, fast.unfuse_projections
    from minivlm.blocks.fused import fuse_projections
    return fuse_projections, lambda model: fuse_projections(model, False)


def test_5_int8_and_fused_projections_compose_in_either_order(tmp_path):
    """quantize_int8 then fuse_projections (which used to stack int8 rows into a float Linear and fail
    in generate) and the other order give one model's numbers: fusing int8 layers stacks their rows
    and scales, quantising a fused layer quantises each row on its own, so both are the same weights."""
    from minivlm.fast.quant import Int8Linear, quantize_int8
    fuse_projections, unfuse_projections = fusion()
    _, ours, inputs = tiny_llama(tmp_path)
    int8_then_fused = fuse_projections(quantize_int8(copy.deepcopy(ours)))
    fused_then_int8 = quantize_int8(fuse_projections(copy.deepcopy(ours)))
    for model in (int8_then_fused, fused_then_int8):
        assert isinstance(model.model.layers[0].attn.qkv_proj, Int8Linear)
        assert isinstance(model.model.layers[0].mlp.gate_up_proj, Int8Linear)
    a = int8_then_fused.generate(**inputs, max_new_tokens=5)
    assert torch.equal(a, fused_then_int8.generate(**inputs, max_new_tokens=5))
    assert torch.equal(int8_then_fused(**inputs).logits, fused_then_int8(**inputs).logits)
    plain_int8 = quantize_int8(copy.deepcopy(ours))
    assert torch.equal(unfuse_projections(int8_then_fused)(**inputs).logits, plain_int8(**inputs).logits)


def test_5_cross_attention_is_never_fused():
    """BLIP's text cross-attention with kv width == text width: its keys and values read the image."""
    from minivlm.blocks.attention import Attention
    from minivlm.text.bert import BertConfig, BertLayer
    layer = BertLayer(BertConfig(hidden_size=16, num_heads=2, intermediate_size=24, encoder_hidden_size=16))
    fusion()[0](layer)
    assert type(layer.cross_attn) is Attention and not hasattr(layer.cross_attn, "qkv_proj")
    assert hasattr(layer.self_attn, "qkv_proj")


class StepFailure(RuntimeError):
    pass


@torch.no_grad()
def test_6_a_decode_step_that_raised_leaves_the_cache_as_it_was(tmp_path, monkeypatch):
    """CompiledDecoder (eager form) over the static cache: a step that raises half way leaves the
    cache's length where it was, and running the step again continues as if it had never failed."""
    from minivlm.blocks import StaticKVCache
    from minivlm.fast import CompiledDecoder
    from minivlm.generation import prompt_positions
    _, ours, inputs = tiny_llama(tmp_path)
    decoder = CompiledDecoder(ours, compile=False)

    def steps(fail_at=None):
        cache, mask = StaticKVCache(room=4), inputs["attention_mask"]
        positions = prompt_positions(mask)
        out = decoder(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions,
                      past_key_values=cache, logits_to_keep=1)
        picks = []
        for step in range(3):
            new = out.logits[:, -1].argmax(-1)[:, None]
            picks.append(new)
            mask, positions = torch.cat([mask, torch.ones_like(new)], 1), positions[:, -1:] + 1
            if step == fail_at:
                before = len(cache)
                with monkeypatch.context() as m:
                    m.setattr(type(ours.model.layers[-1].mlp), "forward", lambda *a: (_ for _ in ()).throw(StepFailure()))
                    with pytest.raises(StepFailure):
                        decoder(input_ids=new, attention_mask=mask, position_ids=positions, past_key_values=cache)
                assert len(cache) == before
            out = decoder(input_ids=new, attention_mask=mask, position_ids=positions, past_key_values=cache)
        return torch.cat(picks, 1), out.logits

    ids, logits = steps()
    failed_ids, failed_logits = steps(fail_at=1)
    assert torch.equal(failed_ids, ids) and torch.equal(failed_logits, logits)


class NoMoving(torch.Tensor):
    """A tensor that refuses to be moved or cast: the decode step must not touch inv_freq."""

    def to(self, *args, **kwargs):
        raise AssertionError("inv_freq was moved inside a decode step")


@torch.no_grad()
def test_6_the_decode_step_does_not_move_inv_freq(tmp_path):
    """The RoPE table is built from inv_freq when the prompt runs; a decode step (eager or compiled
    form) only reads the table, so an inv_freq that refuses to move after the prompt changes nothing."""
    from minivlm.blocks import StaticKVCache
    from minivlm.fast import CompiledDecoder
    from minivlm.generation import prompt_positions
    _, ours, inputs = tiny_llama(tmp_path)
    expected = ours.generate(**inputs, max_new_tokens=4)[:, inputs["input_ids"].shape[1]:]
    decoder, rope = CompiledDecoder(ours, compile=False), ours.model.rope
    cache, mask = StaticKVCache(room=4), inputs["attention_mask"]
    positions = prompt_positions(mask)
    out = decoder(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions, past_key_values=cache)
    real, picks = rope.inv_freq, []
    rope.inv_freq = real.as_subclass(NoMoving)
    try:
        for _ in range(4):
            picks.append(out.logits[:, -1].argmax(-1)[:, None])
            mask, positions = torch.cat([mask, torch.ones_like(picks[-1])], 1), positions[:, -1:] + 1
            out = decoder(input_ids=picks[-1], attention_mask=mask, position_ids=positions, past_key_values=cache)
    finally:
        rope.inv_freq = real
    assert torch.equal(torch.cat(picks, 1), expected)
