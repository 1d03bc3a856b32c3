"""tokenizer.apply_chat_template against transformers', with the hub's templates saved into tiny
tokenizer folders the ways checkpoints hold them (chat_template.jinja, tokenizer_config.json's
entry): rendered strings, ids, attention masks and assistant masks equal, single and batched, left
and right padding, truncation; template kwargs, continue_final_message; character offsets equal
to tokenizers'; the errors."""
import json
import shutil

import pytest
import torch

import weights_convert
from minivlm.processing import reference_templates as ref
from minivlm.processing.chat_template import ChatTemplateError
from test_chat_template import IMG, STRING_CHATS, TYPED_CHATS, VID, typed
from test_tokenizer_json import TEXTS, llama2_dirs, llama3_dir, random_texts
from test_tokenizer_qwen2 import QWEN2_TEXTS, train_qwen2_bpe, write_qwen2_vl_config

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


def with_template(source, folder, template, where):
    """A copy of a tokenizer folder holding `template` in chat_template.jinja or tokenizer_config.json."""
    shutil.copytree(source, folder)
    if where == "jinja":
        (folder / "chat_template.jinja").write_text(template)
    else:
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": template}))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    llama2_hub, _, _ = llama2_dirs(root, legacy=False)
    # llava-hf's tokenizer: Llama 2's with <image> added (and a pad token), saved by transformers 5
    llava = root / "llava_tok"
    hf = transformers.AutoTokenizer.from_pretrained(llama2_hub)
    hf.add_special_tokens({"pad_token": "<pad>"})
    hf.add_tokens(["<image>"], special_tokens=True)
    hf.save_pretrained(llava)
    qwen = root / "qwen_tok"
    qwen.mkdir()
    write_qwen2_vl_config(qwen, train_qwen2_bpe(qwen), model_max_length=10_000)
    llama3 = llama3_dir(root)
    return {
        "llava-1.5": with_template(llava, root / "llava15", ref.LLAVA_1_5, "jinja"),
        "llava-v1.6-mistral": with_template(llava, root / "llava16", ref.LLAVA_1_6_MISTRAL, "config"),
        "mistral-inst": with_template(llama2_hub, root / "mistral", ref.MISTRAL_INST, "config"),
        "qwen2-vl": with_template(qwen, root / "qwen2vl", ref.QWEN2_VL, "config"),
        "llava-onevision": with_template(qwen, root / "onevision", ref.LLAVA_ONEVISION, "jinja"),
        "llama-3": with_template(llama3, root / "llama3_chat", ref.LLAMA_3, "jinja"),
        "chatml-generation": with_template(llama3, root / "chatml", ref.CHATML_GENERATION, "config"),
        "none": llama2_hub,
    }


def pair(folders, name):
    hf, ours = transformers.AutoTokenizer.from_pretrained(folders[name]), weights_convert.load_tokenizer(folders[name])
    if hf.pad_token is None:
        hf.pad_token = ours.pad_token = hf.eos_token
    assert ours.chat_template == hf.chat_template
    assert ours.special_tokens_map == hf.special_tokens_map
    return hf, ours


CHATS = {"llava-1.5": TYPED_CHATS[:3], "llava-v1.6-mistral": TYPED_CHATS, "llava-onevision": TYPED_CHATS,
         "qwen2-vl": TYPED_CHATS + STRING_CHATS, "llama-3": STRING_CHATS, "mistral-inst": STRING_CHATS[:2],
         "chatml-generation": STRING_CHATS + [[{"role": "system", "content": "sys"}] + STRING_CHATS[1]]}
MASKED = ["llava-1.5", "llava-v1.6-mistral", "llava-onevision", "chatml-generation"]


def prompts(chats):
    """The chats as given, and each cut before its last reply with a generation prompt."""
    out = [(chat, False) for chat in chats]
    out += [(chat[:-1], True) for chat in chats if chat[-1]["role"] == "assistant" and len(chat) > 1]
    return out + [(chat, True) for chat in chats if chat[-1]["role"] == "user"]


@pytest.mark.parametrize("name", list(CHATS))
def test_single_conversation_equal_hf(folders, name):
    hf, ours = pair(folders, name)
    for chat, gen in prompts(CHATS[name]):
        kwargs = dict(add_generation_prompt=gen)
        assert ours.apply_chat_template(chat, tokenize=False, **kwargs) == hf.apply_chat_template(chat, tokenize=False,
                                                                                                 **kwargs)
        assert ours.apply_chat_template(chat, return_dict=False, **kwargs) == hf.apply_chat_template(
            chat, return_dict=False, **kwargs)
        expected, got = hf.apply_chat_template(chat, **kwargs), ours.apply_chat_template(chat, **kwargs)
        assert got["input_ids"] == expected["input_ids"] and got["attention_mask"] == expected["attention_mask"]
        if name in MASKED:
            expected = hf.apply_chat_template(chat, return_assistant_tokens_mask=True, **kwargs)
            got = ours.apply_chat_template(chat, return_assistant_tokens_mask=True, **kwargs)
            assert got["assistant_masks"] == expected["assistant_masks"]
            assert got["input_ids"] == expected["input_ids"]


@pytest.mark.parametrize("name", MASKED)
@pytest.mark.parametrize("settings", [dict(padding=True), dict(padding=True, tokenizer_kwargs={"padding_side": "left"}),
                                      dict(padding="max_length", truncation=True, max_length=-3),
                                      dict(padding=True, truncation=True, max_length=-5,
                                           tokenizer_kwargs={"padding_side": "left"}, truncation_side="left")],
                         ids=["right", "left", "truncated", "truncated-left"])
def test_batch_with_assistant_masks_equal_hf(folders, name, settings):
    hf, ours = pair(folders, name)
    settings = dict(settings)
    hf.truncation_side = ours.truncation_side = settings.pop("truncation_side", "right")
    chats = [chat for chat in CHATS[name] if chat[-1]["role"] == "assistant"]
    if "max_length" in settings:  # cut inside the last reply of the shortest chat
        settings = settings | {"max_length": min(map(len, ours.apply_chat_template(chats, return_dict=False)))
                               + settings["max_length"]}
    expected = hf.apply_chat_template(chats, return_tensors="pt", return_assistant_tokens_mask=True, **settings)
    got = ours.apply_chat_template(chats, return_tensors="pt", return_assistant_tokens_mask=True, **settings)
    for key in ("input_ids", "attention_mask", "assistant_masks"):
        assert got[key].dtype == torch.long
        assert torch.equal(got[key], expected[key]), key
    assert got["assistant_masks"].sum() > 0


def test_masked_tokens_are_the_replies(folders):
    """An independent check: the masked tokens decode to the replies (and the end marker)."""
    _, ours = pair(folders, "chatml-generation")
    chat = STRING_CHATS[1] + [{"role": "assistant", "content": "Why 東京?"}]
    out = ours.apply_chat_template(chat, return_assistant_tokens_mask=True)
    runs, current = [], []
    for token, m in zip(out["input_ids"], out["assistant_masks"]):
        if m:
            current.append(token)
        elif current:
            runs, current = runs + [current], []
    runs += [current] if current else []
    assert [ours.decode(r) for r in runs] == ["Hello, how can I help?<|im_end|>", "Why 東京?<|im_end|>"]


def test_template_kwargs_and_continue_final_message_equal_hf(folders):
    hf, ours = pair(folders, "qwen2-vl")
    chat = [typed("user", IMG, IMG, VID, "Which differ?")]
    for flag in (False, True):
        assert ours.apply_chat_template(chat, add_generation_prompt=True, add_vision_id=flag, return_dict=False) == \
            hf.apply_chat_template(chat, add_generation_prompt=True, add_vision_id=flag, return_dict=False)
    hf, ours = pair(folders, "llama-3")
    chat = STRING_CHATS[1] + [{"role": "assistant", "content": "Why did the"}]
    assert ours.apply_chat_template(chat, continue_final_message=True, return_dict=False) == \
        hf.apply_chat_template(chat, continue_final_message=True, return_dict=False)
    # a template variable given by the caller wins over the tokenizer's special token
    assert ours.apply_chat_template(chat[:1], tokenize=False, bos_token="[BOS]").startswith("[BOS]")


@pytest.mark.parametrize("name", ["llava-1.5", "qwen2-vl", "llama-3", "none"])
def test_offsets_equal_tokenizers(folders, name):
    hf, ours = pair(folders, name) if name != "none" else (transformers.AutoTokenizer.from_pretrained(folders[name]),
                                                           weights_convert.load_tokenizer(folders[name]))
    texts = TEXTS + QWEN2_TEXTS + random_texts(60) + [ours.apply_chat_template(c, tokenize=False) for c in
                                                      (CHATS.get(name) or [])]
    for text in texts:
        e = hf(text, add_special_tokens=False, return_offsets_mapping=True)
        expected = list(zip(hf.convert_ids_to_tokens(e["input_ids"]), map(tuple, e["offset_mapping"])))
        assert [(t, (a, b)) for t, a, b in ours.tokenize_with_offsets(text)] == expected, text


def test_errors(folders):
    _, ours = pair(folders, "mistral-inst")
    with pytest.raises(ChatTemplateError, match="Conversation roles must alternate"):
        ours.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="continue_final_message and add_generation_prompt"):
        ours.apply_chat_template(STRING_CHATS[0], continue_final_message=True, add_generation_prompt=True)
    with pytest.raises(TypeError, match="message 0 must be a dict"):
        ours.apply_chat_template(["hello"])
    with pytest.raises(ValueError, match="role 'bot'"):
        ours.apply_chat_template([{"role": "bot", "content": "a"}])
    with pytest.raises(ValueError, match="content type 'audio'"):
        ours.apply_chat_template([typed("user", {"type": "audio", "url": "x.wav"})])
    with pytest.raises(ValueError, match="needs tokenize=True and return_dict=True"):
        ours.apply_chat_template(STRING_CHATS[0], tokenize=False, return_assistant_tokens_mask=True)
    with pytest.raises(ValueError, match="empty conversation"):
        ours.apply_chat_template([])
    no_template = weights_convert.load_tokenizer(folders["none"])
    assert no_template.chat_template is None
    with pytest.raises(ValueError, match="this tokenizer has no chat template"):
        no_template.apply_chat_template(STRING_CHATS[0])
    # a template passed in works without one in the folder
    assert no_template.apply_chat_template(STRING_CHATS[0], chat_template=ref.LLAMA_3, tokenize=False).startswith("<s>")
