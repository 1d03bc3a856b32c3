"""`python -m minivlm trace`: every stage printed, each equal to transformers' stage, offline."""
import argparse
import sys

import numpy as np
import pytest
from PIL import Image

from minivlm.commands import trace as trace_command

STAGES = ["image file", "RGB", "resize/pad", "pixel_values", "patch embedding", "encoder layer 0",
          "encoder layer 3", "selected layer", "projector", "prompt tokens", "merged embeddings", "decoder",
          "logits", "generated tokens"]


def run(capsys, *argv):
    parser = argparse.ArgumentParser()
    trace_command.add_arguments(parser)
    code = trace_command.run(parser.parse_args(list(argv)))
    return code, capsys.readouterr().out


def test_default_trace_matches_transformers_at_every_stage(capsys, tmp_path):
    plot = tmp_path / "stages.png"
    code, out = run(capsys, "--plot", str(plot), "--max-new-tokens", "5")
    assert code == 0, out
    for name in STAGES:
        assert name in out
    assert "grace_hopper.jpg" in out and "[<image> x 64]" in out
    assert "token ids equal -> ok" in out
    table = [line for line in out.splitlines() if line[:2].strip().isdigit()]
    compared = [line for line in table if "e-" in line or "e+00" in line or "equal" in line]
    assert len(compared) >= 13  # pixel_values ... logits, prompt and generated ids
    assert plot.is_file() and plot.stat().st_size > 10_000


def test_own_image_and_prompt_without_reference(capsys, tmp_path):
    """A non-square RGBA file: converted to RGB, padded to a square, resized; a full prompt with <image>."""
    rgba = np.zeros((40, 90, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    path = tmp_path / "wide.png"
    Image.fromarray(rgba, "RGBA").save(path)
    code, out = run(capsys, "--image", str(path), "--prompt", "<image>\nname the colour", "--no-reference",
                    "--max-new-tokens", "3")
    assert code == 0
    assert "90x40 RGBA" in out and "converted" in out and "(1, 3, 64, 64)" in out
    assert "<s> [<image> x 64] <0x0A> n a m e" in out
    assert "3 new" in out and "vs HF" not in out


def test_checkpoint_folder(capsys, tmp_path):
    """--checkpoint reads a llava-hf style folder: weights, tokenizer files, preprocessor config."""
    from minivlm.trace import build_default
    build_default(tmp_path / "ckpt", seed=3)
    code, out = run(capsys, "--checkpoint", str(tmp_path / "ckpt"), "--prompt", "Who is this?", "--max-new-tokens", "3")
    assert code == 0, out
    assert f"checkpoint {tmp_path / 'ckpt'}" in out and "W h o" in out and "token ids equal -> ok" in out


def test_missing_image_file_is_a_clear_error(capsys, tmp_path):
    code, out = run(capsys, "--image", str(tmp_path / "nope.jpg"))
    assert code == 2 and "no image file at" in out


def test_runs_without_transformers(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    code, out = run(capsys, "--max-new-tokens", "2")
    assert code == 0
    assert "transformers is not installed: no reference comparison" in out
    assert "generated tokens" in out


def test_cli_knows_the_command():
    from minivlm.cli import COMMANDS
    assert "trace" in COMMANDS


@pytest.mark.cuda
def test_trace_on_gpu_bf16(capsys, cuda_device):
    code, out = run(capsys, "--device", cuda_device, "--dtype", "bfloat16", "--max-new-tokens", "3")
    assert "vs HF" in out and "generated tokens" in out
    assert code == 0, out
