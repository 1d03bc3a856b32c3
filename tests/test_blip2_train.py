"""The BLIP-2 recipe's parts (minivlm/train/blip2.py) on a random tiny tower: stage 1's three losses
fall, its Q-Former moves into the captioner unchanged, and stage 2 changes only its parts."""
import tempfile

import pytest
import torch

import weights_convert
from minivlm.data.llava_dataset import LlavaCollator
from minivlm.data.shapes import ShapesWorld
from minivlm.data.shapes_tokenizer import ShapesTokenizer
from minivlm.models.clip import clip_vision_config
from minivlm.text.llama_config import LlamaConfig
from minivlm.train.blip2 import (RECIPE, STAGE2_PARTS, build_stage1, freeze_parts, stage1_step, to_captioner)
from minivlm.train.dual_encoder import make_processor, pairs
from minivlm.evaluation.answers import CHAT
from minivlm.train.llava import exchange_records, llava_loss, materialise, random_batches
from minivlm.train.loop import TrainConfig, train
from minivlm.processing.tiny_tokenizer import write_tiny_tokenizer
from minivlm.vision import VisionTransformer
from minivlm.text.llama import LlamaForCausalLM


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    tower = VisionTransformer(clip_vision_config(image_size=32, patch_size=8, hidden_size=32, num_layers=1,
                                                 num_heads=2, intermediate_size=64))
    folder = tempfile.mkdtemp()
    vocab_size = write_tiny_tokenizer(folder)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=vocab_size - 1,
                                      max_position_embeddings=512))
    words = ShapesTokenizer(max_length=16)
    r = dict(RECIPE, num_query_tokens=4)
    stage1 = build_stage1(tower, lm.config, words, vocab_size - 2, r)
    return tower, lm, words, stage1, weights_convert.load_tokenizer(folder), make_processor("clip", 32)


def test_stage1_losses_fall(setup):
    tower, _, words, stage1, _, processor = setup
    world = ShapesWorld(image_size=32, max_shapes=2)
    history = train(stage1, pairs(world, words, processor, 12), stage1_step,
                    TrainConfig(steps=40, lr=2e-3, progress=False))
    for name in ("itc", "itg"):
        first, last = history.metrics[name][:5], history.metrics[name][-5:]
        assert sum(last) < 0.8 * sum(first), (name, first, last)
    assert all(torch.equal(a, b) for a, b in zip(stage1.vision_model.state_dict().values(),
                                                 tower.state_dict().values()))  # the tower stayed frozen


@torch.no_grad()
def test_qformer_moves_into_the_captioner(setup):
    _, lm, _, stage1, _, _ = setup
    model = to_captioner(stage1, lm).eval()
    stage1.eval()
    image = stage1.vision_model(torch.randn(2, 3, 32, 32)).last_hidden_state
    assert torch.equal(model.query(image).last_hidden_state, stage1.query(image).last_hidden_state)
    assert torch.equal(model.language_model.lm_head.weight, lm.lm_head.weight)


def test_stage2_changes_only_its_parts(setup):
    _, lm, _, stage1, tokenizer, processor = setup
    model = to_captioner(stage1, lm)
    freeze_parts(model, STAGE2_PARTS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    items = materialise(exchange_records(ShapesWorld(image_size=32, max_shapes=2), 4), tokenizer, processor, CHAT,
                        model)
    assert all(int((i["input_ids"] == model.config.image_token_index).sum()) == 4 for i in items)
    collator = LlavaCollator(lm.config.pad_token_id, image_token_id=model.config.image_token_index)
    train(model, random_batches(items, collator, 4), llava_loss, TrainConfig(steps=1, lr=1e-2, progress=False))
    for name, value in model.state_dict().items():
        moved = not torch.equal(value, before[name])
        assert moved == name.startswith(STAGE2_PARTS), name
