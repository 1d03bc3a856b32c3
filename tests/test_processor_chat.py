"""processor.apply_chat_template against transformers': the folder's own template (the hub's
llava-1.5 and Qwen2-VL templates, reference_templates.py), rendered strings equal, and with
tokenize=True the images named in the messages run through the processor: every key equal."""
import pytest
import torch

from minivlm.processing.reference_templates import LLAVA_1_5, QWEN2_VL

transformers = pytest.importorskip("transformers")
from test_processor import (CLIP_STD, assert_same, byte_bpe, clip_image_processor, hub_pair,  # noqa: E402
                            random_image, saved_pair)


def conversation(image):
    return [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": "What is in this image?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A cat on a mat."}]},
            {"role": "user", "content": [{"type": "text", "text": "And the colour?"}]}]


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    hf = transformers.LlavaProcessor(image_processor=clip_image_processor(), tokenizer=byte_bpe(["<image>"]),
                                     patch_size=6, vision_feature_select_strategy="default",
                                     num_additional_image_tokens=1, chat_template=LLAVA_1_5)
    return saved_pair(hf, tmp_path_factory.mktemp("llava-chat"))


def test_llava_template_renders_and_tokenizes_as_hf(llava, tmp_path):
    hf, ours = llava
    assert ours.chat_template == LLAVA_1_5  # read from the folder's chat_template.jinja
    path = tmp_path / "photo.png"
    random_image(40, 60, 9).save(path)
    chat = conversation(random_image(27, 104))
    for gen in (True, False):
        assert ours.apply_chat_template(chat, add_generation_prompt=gen) == \
            hf.apply_chat_template(chat, add_generation_prompt=gen)
    batch = [chat, [{"role": "user", "content": [{"type": "image", "path": str(path)},
                                                 {"type": "text", "text": "hi"}]}]]
    assert ours.apply_chat_template(batch) == hf.apply_chat_template(batch)
    kwargs = dict(add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    a = ours.apply_chat_template(batch, processor_kwargs=dict(padding=True), **kwargs)
    b = hf.apply_chat_template(batch, processor_kwargs=dict(padding=True), **kwargs)
    assert sorted(a) == sorted(b) and a["pixel_values"].shape == b["pixel_values"].shape == (2, 3, 30, 30)
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(a[key], b[key])
    assert (a["pixel_values"] - b["pixel_values"]).abs().max() <= 1 / 255 / CLIP_STD + 1e-6
    ids = ours.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    assert ids == hf.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)


def test_continue_final_message_equals_hf(llava):
    hf, ours = llava
    chat = conversation(random_image(20, 20))[:2]
    assert ours.apply_chat_template(chat, continue_final_message=True) == \
        hf.apply_chat_template(chat, continue_final_message=True)
    with pytest.raises(ValueError, match="continue_final_message and add_generation_prompt"):
        ours.apply_chat_template(chat, continue_final_message=True, add_generation_prompt=True)


def test_qwen2_vl_template_with_vision_ids_equals_hf(tmp_path):
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>"]
    tokenizer = byte_bpe(specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False)
    image_processor = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 2, max_pixels=28 * 28 * 12)
    (tmp_path / "chat_template.jinja").write_text(QWEN2_VL)
    hf, ours = hub_pair(transformers.Qwen2VLProcessor, tmp_path, tokenizer, image_processor,
                        dict(image_token="<|image_pad|>", video_token="<|video_pad|>"))
    hf.chat_template = QWEN2_VL
    two = [{"role": "user", "content": [{"type": "image", "image": random_image(60, 90)},
                                        {"type": "image", "image": random_image(30, 30, 1)},
                                        {"type": "text", "text": "Compare them."}]}]
    for kwargs in (dict(add_generation_prompt=True), dict(add_generation_prompt=True, add_vision_id=True)):
        assert ours.apply_chat_template(two, **kwargs) == hf.apply_chat_template(two, **kwargs)
    prompt = ours.apply_chat_template(two, add_generation_prompt=True)
    images = [part["image"] for part in two[0]["content"] if part["type"] == "image"]
    assert_same(ours, hf, min(image_processor.image_std), text=[prompt], images=images)


def test_bad_conversations(llava, tmp_path):
    hf, ours = llava
    with pytest.raises(ValueError, match="downloads nothing"):
        ours.apply_chat_template([{"role": "user", "content": [{"type": "image", "url": "https://x.org/a.jpg"}]}],
                                 tokenize=True)
    with pytest.raises(TypeError, match="message 0 must be a dict"):
        ours.apply_chat_template(["hello"])
    with pytest.raises(FileNotFoundError, match="no image file at"):
        ours.apply_chat_template([{"role": "user", "content": [{"type": "image", "path": str(tmp_path / "gone.png")},
                                                               {"type": "text", "text": "?"}]}], tokenize=True)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_assistant_masks_equal_hf(llava, padding_side):
    """return_assistant_tokens_mask: the {% generation %} blocks' characters, moved past the expanded
    image runs, as token masks: HF's, on a batch with images before and after the replies."""
    hf, ours = llava
    chat = conversation(random_image(27, 104))
    two = chat + [{"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
                  {"role": "user", "content": [{"type": "image", "image": random_image(30, 30, 3)},
                                               {"type": "text", "text": "and now?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "Blue square."}]}]
    kwargs = dict(tokenize=True, return_dict=True, return_tensors="pt", return_assistant_tokens_mask=True,
                  processor_kwargs=dict(padding=True, padding_side=padding_side))
    a, b = ours.apply_chat_template([chat, two], **kwargs), hf.apply_chat_template([chat, two], **kwargs)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["assistant_masks"], torch.as_tensor(b["assistant_masks"]))
    assert a["assistant_masks"].sum() > 0
