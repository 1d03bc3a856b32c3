"""`python -m minivlm trace`: every stage printed, each equal to transformers' stage, offline."""
import sys

import numpy as np
import pytest
from PIL import Image

from trace_checks import run_trace

STAGES = ["image file", "RGB", "resize/pad", "pixel_values", "patch embedding", "encoder layer 0",
          "encoder layer 3", "selected layer", "projector", "prompt tokens", "merged embeddings", "decoder",
          "logits", "generated tokens"]


def table_rows(out):
    return [line for line in out.splitlines() if line[:2].strip().isdigit()]


def test_default_trace_answers_a_never_seen_scene_with_the_shipped_model(capsys, tmp_path):
    """No arguments: the shipped trained LLaVA, a shapes-world scene from beyond its training indices,
    the scene's own question; the generated answer is the scene's truth, every stage equals HF's."""
    from minivlm.trace import shapes_sample
    sample = shapes_sample()
    plot = tmp_path / "stages.png"
    code, out = run_trace(capsys, "--plot", str(plot))
    assert code == 0, out
    assert "shapes-llava, the tiny LLaVA trained on the shapes world" in out
    assert f"shapes-world scene {10**9 + 1}" in out and "never trained on" in out
    for name in STAGES[:6] + ["encoder layer 2"] + STAGES[7:]:
        assert name in out
    assert "[<image> x 65]" in out  # 8 x 8 patches of 4 px and [CLS] ('full')
    assert f"question: {sample.question!r}  ->  answer: {sample.answer!r}" in out
    assert f"(the scene's truth: {sample.answer!r}: correct)" in out
    assert "token ids equal -> ok" in out
    compared = [line for line in table_rows(out) if "e-" in line or "e+00" in line or "equal" in line]
    assert len(compared) >= 12  # pixel_values ... logits, prompt and generated ids
    assert plot.is_file() and plot.stat().st_size > 10_000


def test_random_trace_matches_transformers_at_every_stage(capsys, tmp_path):
    plot = tmp_path / "stages.png"
    code, out = run_trace(capsys, "--random", "--plot", str(plot), "--max-new-tokens", "5")
    assert code == 0, out
    for name in STAGES:
        assert name in out
    assert "random weights" in out and "grace_hopper.jpg" in out and "[<image> x 64]" in out
    assert "token ids equal -> ok" in out
    compared = [line for line in table_rows(out) if "e-" in line or "e+00" in line or "equal" in line]
    assert len(compared) >= 13  # pixel_values ... logits, prompt and generated ids
    assert plot.is_file() and plot.stat().st_size > 10_000


def test_own_image_and_prompt_without_reference(capsys, tmp_path):
    """A non-square RGBA file: converted to RGB, padded to a square, resized; a full prompt with <image>."""
    rgba = np.zeros((40, 90, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    path = tmp_path / "wide.png"
    Image.fromarray(rgba, "RGBA").save(path)
    code, out = run_trace(capsys, "--random", "--image", str(path), "--prompt", "<image>\nname the colour",
                    "--no-reference", "--max-new-tokens", "3")
    assert code == 0
    assert "90x40 RGBA" in out and "converted" in out and "(1, 3, 64, 64)" in out
    assert "<s> [<image> x 64] <0x0A> n a m e" in out
    assert "3 new" in out and "vs HF" not in out


def test_shipped_model_on_own_image_and_question(capsys, tmp_path):
    """--image / --prompt with the shipped model: a red circle drawn by hand, its colour asked."""
    from PIL import ImageDraw
    image = Image.new("RGB", (48, 48), (245, 245, 240))
    ImageDraw.Draw(image).ellipse((14, 14, 34, 34), fill=(220, 40, 40))
    path = tmp_path / "circle.png"
    image.save(path)
    code, out = run_trace(capsys, "--image", str(path), "--prompt", "what color is the circle?")
    assert code == 0, out
    assert "circle.png" in out and "48x48 RGB" in out and "(1, 3, 32, 32)" in out
    assert "question: 'what color is the circle?'  ->  answer: 'red'" in out and "scene's truth" not in out
    assert "token ids equal -> ok" in out


def test_random_and_checkpoint_exclude_each_other(capsys, tmp_path):
    from minivlm.errors import UsageError
    with pytest.raises(UsageError, match="exclude each other"):
        run_trace(capsys, "--random", "--checkpoint", str(tmp_path))


def test_checkpoint_folder(capsys, tmp_path):
    """--checkpoint reads a llava-hf style folder: weights, tokenizer files, preprocessor config."""
    from minivlm.trace import build_default
    build_default(tmp_path / "ckpt", seed=3)
    code, out = run_trace(capsys, "--checkpoint", str(tmp_path / "ckpt"), "--prompt", "Who is this?", "--max-new-tokens", "3")
    assert code == 0, out
    assert f"checkpoint {tmp_path / 'ckpt'}" in out and "W h o" in out and "token ids equal -> ok" in out


def test_missing_image_file_is_a_clear_error(capsys, tmp_path):
    from minivlm.errors import UsageError
    with pytest.raises(UsageError, match="no image file at"):
        run_trace(capsys, "--image", str(tmp_path / "nope.jpg"))


@pytest.mark.parametrize("model", [[], ["--random"]], ids=["shipped", "random"])
def test_runs_without_transformers(capsys, monkeypatch, model):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    code, out = run_trace(capsys, "--max-new-tokens", "2", *model)
    assert code == 0
    assert "transformers is not installed: no reference comparison" in out
    assert "generated tokens" in out


def test_cli_knows_the_command():
    from minivlm.cli import COMMANDS
    assert "trace" in COMMANDS


@pytest.mark.cuda
def test_trace_on_gpu_bf16(capsys, cuda_device):
    code, out = run_trace(capsys, "--device", cuda_device, "--dtype", "bfloat16", "--max-new-tokens", "3")
    assert "vs HF" in out and "generated tokens" in out
    assert code == 0, out
