"""The model-card snippet, written with minivlm, on the shipped shapes-llava: load_pretrained +
load_processor + the folder's chat template + generate + decode answers the shapes questions, with
the same prompt and ids as the recipe's own evaluation path (train/llava.py answer) and the same
inputs as transformers' AutoProcessor on the folder."""
from pathlib import Path

import pytest
import torch

import weights_convert
from minivlm.data.shapes import ShapesWorld
from minivlm.processing.chat_template import render_with_spans
from minivlm.processing.conversation import render
from minivlm.train.llava import CHAT, RECIPE, answer, chat_prompt

FOLDER = Path(__file__).parent.parent / "minivlm" / "pretrained" / "shapes-llava"


@pytest.fixture(scope="module")
def shipped():
    return weights_convert.load_pretrained(FOLDER), weights_convert.load_processor(FOLDER)


def test_folder_template_is_the_recipes_template(shipped):
    _, processor = shipped
    turns = [("human", "<image>\nwhat color is the circle?"), ("gpt", "red"), ("human", "and the square?")]
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color is the circle?"}]},
            {"role": "assistant", "content": "red"}, {"role": "user", "content": "and the square?"}]
    assert processor.apply_chat_template(chat, add_generation_prompt=True) == \
        render(CHAT, turns, add_generation_prompt=True).text
    # the {% generation %} blocks mark what the recipe trains on: the same character spans
    answered = turns + [("gpt", "a square")]
    reply = chat + [{"role": "assistant", "content": "a square"}]
    assert render_with_spans(processor.chat_template, reply).generation_spans == render(CHAT, answered).spans


def test_model_card_snippet_answers(shipped):
    model, processor = shipped
    world = ShapesWorld(image_size=model.config.vision_config.image_size, max_shapes=RECIPE["max_shapes"])
    asked = [(s.image, q, a) for s in world.scenes(6, "train", start=5000) for q, a in s.questions[:2]]
    replies, prompts = [], []
    for image, question, _ in asked:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        output = model.generate(**inputs, max_new_tokens=8)
        replies.append(processor.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        prompts.append(prompt)
    assert prompts == [chat_prompt(q) for _, q, _ in asked]
    # the recipe's evaluation path (its own splice-and-expand of <image>) gives the same replies
    tokenizer, image_processor = weights_convert.load_tokenizer(FOLDER), weights_convert.load_image_processor(FOLDER)
    expected = answer(model, tokenizer, image_processor, [im for im, _, _ in asked], prompts)
    assert [r.strip() for r in replies] == expected
    correct = sum(r.strip() == a for r, (_, _, a) in zip(replies, asked))
    assert correct >= len(asked) - 2, list(zip(replies, [a for *_, a in asked]))


def test_same_inputs_as_transformers(shipped):
    transformers = pytest.importorskip("transformers")
    _, ours = shipped
    theirs = transformers.AutoProcessor.from_pretrained(FOLDER)
    world = ShapesWorld(image_size=32, max_shapes=2)
    images = [s.image for s in world.scenes(3)]
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "how many shapes are there?"}]}]
    prompt = ours.apply_chat_template(chat, add_generation_prompt=True)
    assert prompt == theirs.apply_chat_template(chat, add_generation_prompt=True)
    a = ours(text=[prompt] * 3, images=images, padding=True, return_tensors="pt")
    b = theirs(text=[prompt] * 3, images=images, padding=True, return_tensors="pt")
    assert sorted(a) == sorted(b)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])
    assert (a["pixel_values"] - b["pixel_values"]).abs().max() <= 1 / 255 / min(theirs.image_processor.image_std)
