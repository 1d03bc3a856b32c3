"""Conversation templates against the strings the original LLaVA repo's get_prompt builds (written
out by hand here from its rules), and the llava-hf chat template's prompt."""
import pytest

from minivlm.processing.conversation import TEMPLATES, prompt, render

TURNS = [("human", "<image>\nWhat is it?"), ("gpt", "A cat."), ("human", "Color?"), ("gpt", "Black.")]
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the user's questions.")
LLAMA_2_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content "
                  "that the user provides, and assist the user with a variety of tasks using natural language.")


def trained(r):
    return [r.text[a:b] for a, b in r.spans]


def test_vicuna_v1():
    r = render("vicuna_v1", TURNS)
    assert r.text == (VICUNA_SYSTEM + " USER: <image>\nWhat is it? ASSISTANT: A cat.</s>"
                      "USER: Color? ASSISTANT: Black.</s>")
    assert trained(r) == [" A cat.</s>", " Black.</s>"]
    assert prompt("vicuna_v1", "<image>\nWhat is it?") == VICUNA_SYSTEM + " USER: <image>\nWhat is it? ASSISTANT:"
    assert TEMPLATES["v1"] is TEMPLATES["llava_v1"] is TEMPLATES["vicuna_v1"]


def test_llava_llama_2():
    r = render("llava_llama_2", TURNS)
    assert r.text == (f"[INST] <<SYS>>\n{LLAMA_2_SYSTEM}\n<</SYS>>\n\n<image>\nWhat is it? [/INST] A cat. </s>"
                      "<s>[INST] Color? [/INST] Black. </s>")
    assert trained(r) == [" A cat. </s>", " Black. </s>"]
    assert prompt("llava_llama_2", "hi").endswith("\n<</SYS>>\n\nhi [/INST]")


def test_plain_keeps_only_the_image_and_the_caption():
    r = render("plain", [("human", "<image>\nDescribe it briefly."), ("gpt", "a red circle")])
    assert r.text == "<image>a red circle\n"
    assert trained(r) == ["a red circle\n"]
    with pytest.raises(ValueError, match="one human turn holding <image> and one reply"):
        render("plain", TURNS)


def test_llava_hf_chat_template():
    # The llava-hf chat template: "USER: " + images "<image>\n" + text + " ", "ASSISTANT: " + text + " ".
    assert prompt("llava_hf", "<image>\nWhat's the content of the image?") == \
        "USER: <image>\nWhat's the content of the image? ASSISTANT:"
    r = render("llava_hf", TURNS)
    assert r.text == "USER: <image>\nWhat is it? ASSISTANT: A cat. USER: Color? ASSISTANT: Black. "


def test_llava_json_turns_and_role_errors():
    as_json = [{"from": f, "value": v} for f, v in TURNS]
    assert render("vicuna_v1", as_json).text == render("vicuna_v1", TURNS).text
    assert render("vicuna_v1", [("user", "hi"), ("assistant", "yo")]).text.endswith("USER: hi ASSISTANT: yo</s>")
    with pytest.raises(ValueError, match="turn 1 comes from 'human' but turns must alternate"):
        render("vicuna_v1", [("human", "a"), ("human", "b")])
    with pytest.raises(ValueError, match="turn 0 comes from 'system'"):
        render("vicuna_v1", [("system", "a")])
    with pytest.raises(ValueError, match="unknown conversation template 'chatml'"):
        render("chatml", TURNS)
