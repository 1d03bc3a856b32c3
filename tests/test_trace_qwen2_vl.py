"""`python -m minivlm trace --model qwen2_vl` (and --checkpoint on a Qwen2-VL folder): every stage
printed, each equal to transformers' stage, offline."""

import numpy as np
from PIL import Image

from minivlm.trace.tiny import build_default
from trace_checks import run_trace

STAGES = ["smart_resize", "pixel_values", "patch embedding", "encoder layer 3", "patch merger", "prompt tokens",
          "M-RoPE positions", "merged embeddings", "decoder", "logits", "generated tokens"]


def compared_rows(out):
    table = [line for line in out.splitlines() if line[:2].strip().isdigit()]
    return [line for line in table if "e-" in line or "e+00" in line or "equal" in line]


def test_default_trace_on_an_odd_rgba_image(capsys, tmp_path):
    rgba = np.zeros((45, 131, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3], rgba[:, 40:60, 2] = 200, 128, 255
    path = tmp_path / "odd.png"
    Image.fromarray(rgba, "RGBA").save(path)
    code, out = run_trace(capsys, "--model", "qwen2_vl", "--image", str(path), "--max-new-tokens", "3")
    assert code == 0, out
    for name in STAGES:
        assert name in out, name
    assert "Qwen2-VL trace: tiny Qwen2-VL" in out and "131x45 RGBA" in out
    assert "token ids equal -> ok" in out
    assert len(compared_rows(out)) >= 12  # pixel_values ... logits, positions, prompt and generated ids


def test_checkpoint_folder_is_recognised(capsys, tmp_path):
    build_default("qwen2_vl", tmp_path, seed=3)
    code, out = run_trace(capsys, "--checkpoint", str(tmp_path), "--prompt", "Which shape?", "--max-new-tokens", "2")
    assert code == 0, out
    assert f"Qwen2-VL trace: checkpoint {tmp_path}" in out and "text resumes at" in out
    assert "token ids equal -> ok" in out
