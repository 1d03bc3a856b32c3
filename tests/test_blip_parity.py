"""BlipForConditionalGeneration / BlipForImageTextRetrieval / BlipForQuestionAnswering against
transformers over several tiny configs: every output field, and greedy ids where a case generates."""
import tempfile

import pytest
import torch

from minivlm.parity.blip import CASES
from minivlm.parity.harness import build_seeded, convert_reference, to_device


# bf16 on a GPU: both models in bf16 on the same inputs. Tolerance relative to the reference's
# magnitude (bf16 keeps ~3 significant digits and the error grows through the layers), and the
# arg-max token of the logits must agree on >= 99% of the compared positions.
BF16_RELATIVE = 3e-2


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@torch.no_grad()
def test_blip_parity_bf16_cuda(case, cuda_device):
    reference = build_seeded(case.build_reference)
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        ours = convert_reference(reference, folder, dtype=torch.bfloat16, device=cuda_device)
    reference = reference.to(device=cuda_device, dtype=torch.bfloat16)
    inputs = to_device(inputs, cuda_device, torch.bfloat16)
    mine, ref = ours(**inputs), reference(**inputs)
    valid = case.valid_positions(inputs) if case.valid_positions else None
    for field in case.fields:
        a, b = mine[field].float(), getattr(ref, field).float()
        if valid is not None and a.dim() >= 2 and tuple(valid.shape) == tuple(a.shape[:2]):
            a, b = a[valid], b[valid]
        scale = b.abs().max().item() + 1.0
        assert (a - b).abs().max().item() <= BF16_RELATIVE * scale, f"{case.name}: {field} in bf16"
        if field == "logits":
            agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
            assert agree >= 0.99, f"{case.name}: top-1 agreement {agree:.3f} in bf16"
