"""`python -m minivlm trace --model M` for every family: each stage within the fp32 budget against
transformers (0.0 for most; a few 1e-7..1e-6, see docs/layout.md), the ids equal, the figure drawn.
Every model here is a seeded tiny one (or a shipped shapes model), so each run takes seconds."""
import json

import pytest

from minivlm.trace.families import MODELS
from trace_checks import run_trace

pytest.importorskip("transformers")

# What a family's table must show besides the verdict (a stage name only that family has).
SIGNATURE = {"vit": "predicted class", "clip": "best caption", "siglip": "attention-pooled", "blip": "decoder tokens",
             "blip_itm": "ITM logits", "blip2": "Q-Former queries", "instructblip": "instruction tokens",
             "llama": "decoder layer 3", "mistral": "window 8", "qwen2": "final norm", "opt": "learned positions",
             "llava": "selected layer", "llava_next": "[CLS] dropped", "llava_next_siglip": "best resolution",
             "llava_onevision": "LLaVA-OneVision", "qwen2_vl": "M-RoPE positions", "qwen2_5_vl": "Qwen2.5-VL",
             "llava_onevision_images": "[<image> x 37] <0x0A> [<image> x 37]", "llava_onevision_video": "video features",
             "qwen2_vl_video": "<|video_pad|> x 8", "qwen2_5_vl_video": "Qwen2.5-VL (video)"}
SLOW = {"llava_next_siglip"}  # the seed's 384-px tiles: covered by tests/test_trace_next.py


@pytest.mark.parametrize("model", [m for m in MODELS if m not in SLOW])
def test_every_family_traces_in_parity(capsys, tmp_path, model):
    plot = tmp_path / "stages.png"
    code, out = run_trace(capsys, "--model", model, "--random", "--max-new-tokens", "3", "--plot", str(plot))
    assert code == 0, out
    assert "-> ok" in out and "token ids equal" in out and "FAIL" not in out
    assert SIGNATURE[model] in out, out
    rows = [line for line in out.splitlines() if line[:2].strip().isdigit()]
    compared = [r for r in rows if "e-" in r or "e+00" in r or "equal" in r]
    assert len(compared) >= 4, out  # a OneVision video: features, embeddings, logits, ids
    assert plot.is_file() and plot.stat().st_size > 5_000


def test_checkpoint_picks_the_family_from_its_config(capsys, tmp_path):
    """A folder written for OPT, traced with --model llava: config.json's architecture wins."""
    from minivlm.trace.tiny import build_default
    build_default("opt", tmp_path, seed=2)
    code, out = run_trace(capsys, "--checkpoint", str(tmp_path), "--max-new-tokens", "2")
    assert code == 0, out
    assert out.startswith(f"OPT trace: checkpoint {tmp_path}") and "token ids equal -> ok" in out


def test_unknown_architecture_is_a_clear_error(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    from minivlm.errors import UsageError
    with pytest.raises(UsageError, match="GPT2LMHeadModel.*the trace knows"):
        run_trace(capsys, "--checkpoint", str(tmp_path))


@pytest.mark.parametrize("model", ["clip", "blip", "blip_itm"])
def test_shipped_shapes_models_answer_a_never_seen_scene(capsys, model):
    """The shipped CLIP / BLIP defaults: a shapes scene beyond their training indices; the answer is
    the scene's truth, every stage within the budget of transformers'."""
    code, out = run_trace(capsys, "--model", model, "--max-new-tokens", "8")
    assert code == 0, out
    assert "trained on the shapes world" in out and "never trained on" in out
    assert ": correct)" in out and "token ids equal -> ok" in out
