"""The anyres trace (minivlm/trace/llava_next.py): `python -m minivlm trace --model llava_next_siglip`
reproduces the seed's example stage by stage against transformers, and `--checkpoint` follows a
LLaVA-OneVision folder (the shrink stage included)."""
import json

import numpy as np
import pytest
from PIL import Image

from minivlm.parity.harness import build_seeded
from minivlm.parity.llava_onevision import build_reference
from minivlm.processing.tiny_tokenizer import tiny_vocabulary, write_tiny_tokenizer
from minivlm.trace.llava_next import processor_config
from trace_checks import run_trace

pytest.importorskip("transformers")


def test_seed_example_matches_transformers(capsys, tmp_path):
    code, out = run_trace(capsys, "--model", "llava_next_siglip", "--max-new-tokens", "3", "--plot", str(tmp_path / "t.png"))
    assert code == 0, out
    rows = {line.split("  ")[1].strip(): line for line in out.splitlines() if line[:2].strip().isdigit()}
    assert "(3, 27, 104)" in rows["image file"] and "[384, 384]" in rows["best resolution"]
    assert "(1, 2, 3, 384, 384)" in rows["pixel_values"] and "(2, 576, 32)" in rows["vision tower"]
    assert "(2, 144, 64)" in rows["downsample projector (seed)"]          # 576 / 2^2 tokens a tile
    assert "(6, 24, 64)" in rows["unpadded grid"] and "(726, 64)" in rows["image features"]
    assert "equal" in rows["generated tokens"] and "token ids equal -> ok" in out
    assert (tmp_path / "t.png").stat().st_size > 0


def test_checkpoint_onevision_folder(capsys, tmp_path):
    """A OneVision folder (SigLIP 12 px tiles, Qwen2, anyres_max_1) with the tiny tokenizer, its image
    processor config and processor config (load_processor): a 50x50 image's 6x6 unpadded grid is shrunk to 2x2, every stage equals HF's."""
    vocab = tiny_vocabulary()
    size = write_tiny_tokenizer(tmp_path, ["<image>", "<video>", "<pad>"])  # ids as the config says
    reference = build_seeded(lambda: build_reference(
        dict(vision_aspect_ratio="anyres_max_1", image_token_index=len(vocab), video_token_index=len(vocab) + 1),
        dict(vocab_size=size, bos_token_id=1, eos_token_id=2)))
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    processor = {"image_processor_type": "LlavaOnevisionImageProcessor", "size": {"height": 12, "width": 12},
                 "image_grid_pinpoints": config["image_grid_pinpoints"], "image_mean": [0.5] * 3,
                 "image_std": [0.5] * 3}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    (tmp_path / "processor_config.json").write_text(json.dumps(processor_config(config)))
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(image)
    code, out = run_trace(capsys, "--checkpoint", str(tmp_path), "--image", str(image), "--max-new-tokens", "3")
    assert code == 0, out
    rows = {line.split("  ")[1].strip(): line for line in out.splitlines() if line[:2].strip().isdigit()}
    assert "(6, 6, 48)" in rows["unpadded grid"] and "(2, 2, 48)" in rows["shrunk grid"]
    assert "(10, 48)" in rows["image features"]                          # 4 base + 2 rows x (2 + newline)
    assert "token ids equal -> ok" in out
