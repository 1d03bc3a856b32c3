"""A decode step makes the host wait on the device nowhere (issue 28).

On a GPU every `int(t)`, `bool(t)`, `t.item()`, `t.tolist()` or data-dependent shape (nonzero, boolean
indexing) inside a decode step stalls the CPU until the GPU has finished everything queued: a stall
per token. The CPU has no such wait to catch, so a TorchFunctionMode stands in for the device: it
records every call that would force one. The prompt may read the device (ids, padding and positions
are validated there, once per generate); a one-token step with the static cache must not, whatever
default swap, padding, sliding window or fusion is in play.
"""
import copy

import pytest
import torch
from torch.overrides import TorchFunctionMode

from minivlm.blocks import StaticKVCache
from minivlm.fast import CompiledDecoder, fuse_projections
from minivlm.generation import prompt_positions
from minivlm.parity import llama as llama_cases
from minivlm.parity import llava as llava_cases
from minivlm.parity import mistral as mistral_cases
from minivlm.parity import qwen2_vl as qwen2_vl_cases
from minivlm.parity.harness import build_seeded, convert_reference

SYNCING = {"__bool__", "__int__", "__float__", "__index__", "item", "tolist", "numpy", "nonzero", "masked_select",
           "unique", "argwhere", "any", "all"}


class HostReads(TorchFunctionMode):
    """Records the torch calls that make the host read a tensor's values."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        kwargs = kwargs or {}
        indexed_by_mask = name in ("__getitem__", "__setitem__") and any(
            torch.is_tensor(i) and i.dtype == torch.bool
            for i in (args[1] if isinstance(args[1], tuple) else (args[1],)))
        out = func(*args, **kwargs)
        if (name in SYNCING and name not in ("any", "all")) or indexed_by_mask:
            self.reads.append(name)
        return out


def test_the_recorder_sees_host_reads():
    t = torch.tensor([1, 2])
    with HostReads() as seen:
        int(t[0]), bool(t.any()), t.tolist(), t[t > 1]
        torch.arange(3)[t]  # a gather: no read
    assert seen.reads == ["__int__", "__bool__", "tolist", "__getitem__"]


CASES = {"left-padded GQA llama": (llama_cases, "gqa-3to1-bias-head_dim-10/generate"),
         "sliding window (mistral)": (mistral_cases, "window-4-gqa-2to1/generate"),
         "llava": (llava_cases, None),
         "qwen2-vl": (qwen2_vl_cases, None)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for label, (cases, name) in CASES.items():
        case = next(c for c in cases.CASES if c.name == name or name is None and c.name.endswith("/generate"))
        reference = build_seeded(case.build_reference)
        ours = convert_reference(reference, tmp_path_factory.mktemp(label.split()[0]))
        out[label] = ours, case.make_inputs(reference, torch.Generator().manual_seed(0))
    return out


def step_reads(model, inputs):
    """Prefill as generate does, then one decode step under the recorder: what it read, and its logits."""
    cache, mask = StaticKVCache(room=3), inputs["attention_mask"]
    positions = prompt_positions(mask)
    out = model(**inputs, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1)
    new = out.logits[:, -1].argmax(-1)[:, None]
    mask, positions = torch.cat([mask, torch.ones_like(new)], 1), positions[:, -1:] + 1
    with HostReads() as seen:
        out = model(input_ids=new, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    return seen.reads, out.logits


@pytest.mark.parametrize("label", list(CASES))
@torch.no_grad()
def test_a_decode_step_reads_nothing_back(models, label):
    ours, inputs = models[label]
    reads, logits = step_reads(ours, inputs)  # the default swaps (load_pretrained applied them)
    assert reads == [], f"a decode step read the device: {reads}"
    if label in ("llava", "qwen2-vl"):  # their decoder is the LLaMA above: their own forward is what is new
        return
    fused = fuse_projections(copy.deepcopy(ours))
    assert step_reads(fused, inputs)[0] == []
    assert step_reads(CompiledDecoder(fused, compile=False), inputs)[0] == []
    with HostReads() as seen:  # the prompt is where the checks happen: the recorder does see them
        ours(**inputs, past_key_values=StaticKVCache(room=1), use_cache=True)
    assert seen.reads
