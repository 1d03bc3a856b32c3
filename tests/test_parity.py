"""Every parity case of every family, fp32 on CPU: the same list `python -m minivlm parity` runs.

Each case builds a tiny transformers reference from a config, converts it through
weights_convert.load_pretrained, and compares every listed output field within DESIGN.md's
budget (1e-4), plus greedy ids where the case generates. Family-specific corners (kernels,
caches, bad input, bf16 on a GPU) live in the per-family test files.
"""
import pytest

from minivlm.parity import all_cases, assert_parity


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: f"{c.family}:{c.name}")
def test_parity_fp32_cpu(case):
    assert_parity(case)
