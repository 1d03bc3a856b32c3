"""ViTModel / ViTForImageClassification against transformers, over several tiny configs."""
import pytest
import torch

from minivlm.parity import run_case
from minivlm.parity.vit import CASES


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_vit_parity_bf16_cuda(case, cuda_device):
    result = run_case(case, device=cuda_device, dtype=torch.bfloat16)
    for field, diff in result["diffs"].items():
        assert diff <= 5e-2, f"{case.name}: {field} differs by {diff:.2e} in bf16"
