"""CLIPModel / CLIPVisionModel / CLIPTextModel against transformers, over several tiny configs."""
import pytest
import torch

from minivlm.parity import run_case
from minivlm.parity.clip import CASES

# bf16 has 8 bits of mantissa: embeddings (unit norm) and hidden states within 5e-2; logits are
# exp(logit_scale) * cosine, so their error is scaled up by the temperature (measured on CPU bf16:
# <= 3e-2 on embeds and hidden states, <= 2e-2 on logits).
BF16_TOLERANCE = 5e-2
BF16_LOGITS_TOLERANCE = 0.25


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_clip_parity_bf16_cuda(case, cuda_device):
    result = run_case(case, device=cuda_device, dtype=torch.bfloat16)
    for field, diff in result["diffs"].items():
        tol = BF16_LOGITS_TOLERANCE if field.startswith("logits") else BF16_TOLERANCE
        assert diff <= tol, f"{case.name}: {field} differs by {diff:.2e} in bf16"
