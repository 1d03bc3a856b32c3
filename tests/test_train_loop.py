"""The generic training pieces: schedule, loop, progress bar, loss plot, the shapes tokenizer."""
import io
import math

import pytest
import torch

from minivlm.data.shapes import ShapesWorld
from minivlm.data.shapes_tokenizer import ShapesTokenizer
from minivlm.train import TrainConfig, save_loss_curve, train, warmup_cosine
from minivlm.train.progress import ProgressBar


def test_warmup_cosine_by_hand():
    # 10 warmup steps then a half cosine over 90 steps, floor 0.1
    assert warmup_cosine(0, 100, 10, 0.1) == pytest.approx(0.1)          # (0 + 1) / 10
    assert warmup_cosine(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 0.1) == pytest.approx(1.0)         # cos(0)
    assert warmup_cosine(55, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # cos(pi/2) = 0
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)        # cos(pi) = -1
    assert warmup_cosine(3, 10, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(0, 10, 11)


def test_loop_fits_a_line_and_records_history():
    torch.manual_seed(0)
    w_true = torch.tensor([[2.0, -3.0]])

    def batches():
        while True:
            x = torch.randn(32, 2)
            yield {"x": x, "y": x @ w_true.t()}

    model = torch.nn.Linear(2, 1)
    history = train(model, batches(), lambda m, b: (((m(b["x"]) - b["y"]) ** 2).mean(), {"bias": m.bias.item()}),
                    TrainConfig(steps=200, lr=0.05, warmup=10, progress=False, weight_decay=0.0))
    assert len(history.losses) == len(history.lrs) == len(history.metrics["bias"]) == 200
    assert history.mean_loss(last=10) < 1e-3 * history.mean_loss(first=10)
    assert torch.allclose(model.weight, w_true, atol=1e-2)
    assert history.lrs[0] == pytest.approx(0.05 / 10)   # warmup starts at lr / warmup_steps
    assert max(history.lrs) == pytest.approx(0.05)


def test_loop_errors():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="ran out after 2 batches"):
        train(model, iter([torch.zeros(1, 2)] * 2), lambda m, b: m(b).sum(), TrainConfig(steps=5, progress=False))
    with pytest.raises(FloatingPointError, match="step 0"):
        train(model, iter([torch.zeros(1, 2)]), lambda m, b: m(b).sum() * float("nan"),
              TrainConfig(steps=1, progress=False))
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


def test_progress_bar_to_a_file_prints_the_start_and_each_tenth():
    stream = io.StringIO()
    bar = ProgressBar(50, desc="demo", stream=stream)
    for i in range(1, 51):
        bar.update(i, loss=1.0 / i)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("demo [" + "#" * 24 + "] 50/50")
    assert "\r" not in stream.getvalue() and "loss 0.02" in lines[-1]


def test_loss_curve_png(tmp_path):
    pytest.importorskip("matplotlib")
    history = train(torch.nn.Linear(1, 1), iter([torch.ones(4, 1)] * 5), lambda m, b: m(b).pow(2).mean(),
                    TrainConfig(steps=5, progress=False))
    path = save_loss_curve(history, tmp_path / "loss.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    path = save_loss_curve({"stage 1": history, "stage 2": history}, tmp_path / "stages.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_shapes_tokenizer_covers_the_world():
    tok = ShapesTokenizer()
    world = ShapesWorld(image_size=16, max_shapes=3)
    for i in range(200):
        scene = world.scene(i, "train" if i % 2 else "test")
        for text in [scene.caption] + [t for qa in scene.questions for t in qa]:
            ids = tok.encode(text)
            assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
            assert tok.decode(ids) == text                      # words round-trip, '?' re-attached
            assert len(ids) == len(text.replace("?", " ?").split()) + 2   # one id per word
    # <eos> is the largest id: CLIP's pooling finds it by the first-eos and the legacy argmax rule
    assert tok.eos_token_id == tok.vocab_size - 1 and tok.pad_token_id == 0
    assert ShapesTokenizer().vocab == tok.vocab                 # deterministic


def test_shapes_tokenizer_batch_and_errors():
    tok = ShapesTokenizer()
    batch = tok(["a red circle", "a blue square on the left"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 8)
    assert batch["attention_mask"].sum(1).tolist() == [5, 8]
    assert (batch["input_ids"][0, 5:] == tok.pad_token_id).all()
    assert tok(["a red circle"], padding="max_length")["input_ids"].shape == (1, tok.max_length)
    with pytest.raises(ValueError, match="photo"):
        tok.encode("a photo of a red circle")
    with pytest.raises(ValueError, match="not in the shapes-world vocabulary"):
        tok.encode("a red circle!")
    with pytest.raises(ValueError, match="max_length=4"):
        tok(["a red circle on the left"], max_length=4)
    with pytest.raises(ValueError, match="padding"):
        tok(["a red circle"], padding="left")
