"""Chat templates rendered by minivlm (jinja2, sandboxed) against transformers' renderer, on the
hub's templates (minivlm/processing/reference_templates.py): strings and {% generation %} spans
equal; the sandbox, raise_exception, tojson, continue_final_message; where a folder keeps its
template (compared with transformers' own loading)."""
import json
from datetime import datetime

import pytest

from minivlm.processing import reference_templates as ref
from minivlm.processing.chat_template import (ChatTemplateError, load_chat_template, pick_template,
                                              render_chat_template, render_with_spans)

transformers = pytest.importorskip("transformers")
from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

SPECIALS = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def typed(role, *parts):
    return {"role": role, "content": [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]}


IMG, VID = {"type": "image"}, {"type": "video"}
TYPED_CHATS = [
    [typed("user", IMG, "What are these?")],
    [typed("user", IMG, "What are these?"), typed("assistant", "Two cats on a sofa."),
     typed("user", "And the colour?"), typed("assistant", "Grey  and white.\n")],
    [typed("user", "No image, two texts:", IMG, " é 東京 😀", IMG), typed("assistant", "ok")],
    [typed("system", "Be brief."), typed("user", VID, IMG, "Compare."), typed("assistant", "Same.")],
]
STRING_CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "  Hi  there \n"}, {"role": "assistant", "content": "Hello, how can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "é 東京 😀"}, {"role": "assistant", "content": "ok", "tool_calls": None}],
]
CASES = [("llava-1.5", TYPED_CHATS[:3]), ("llava-onevision", TYPED_CHATS), ("qwen2-vl", TYPED_CHATS + STRING_CHATS),
         ("llava-v1.6-mistral", TYPED_CHATS), ("llama-3", STRING_CHATS), ("mistral-inst", STRING_CHATS[:2]),
         ("chatml-generation", STRING_CHATS + [[{"role": "system", "content": "sys"}] + STRING_CHATS[1]])]


def hf_render(template, chat, **kwargs):
    (text,), (spans,) = render_jinja_template([chat], chat_template=template, return_assistant_tokens_mask=True,
                                              **kwargs)
    return text, spans


@pytest.mark.parametrize("name,chats", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("gen", [False, True])
def test_render_equal_hf(name, chats, gen):
    template = ref.TEMPLATES[name]
    for chat in chats:
        if gen and chat[-1]["role"] == "assistant":
            chat = chat[:-1] if len(chat) > 1 else chat
        expected, spans = hf_render(template, chat, add_generation_prompt=gen, **SPECIALS)
        got = render_with_spans(template, chat, add_generation_prompt=gen, **SPECIALS)
        assert got.text == expected
        assert got.generation_spans == spans
        assert render_chat_template(template, chat, add_generation_prompt=gen, **SPECIALS) == expected


def test_generation_spans_cover_the_replies():
    chat = STRING_CHATS[1] + [{"role": "assistant", "content": "Why did the chicken..."}]
    r = render_with_spans(ref.CHATML_GENERATION, chat)
    assert [r.text[a:b] for a, b in r.generation_spans] == ["Hello, how can I help?<|im_end|>",
                                                            "Why did the chicken...<|im_end|>"]
    # llava-1.5: the reply and its trailing space, not "ASSISTANT: "
    r = render_with_spans(ref.LLAVA_1_5, TYPED_CHATS[1])
    assert [r.text[a:b] for a, b in r.generation_spans] == ["Two cats on a sofa. ", "Grey  and white.\n "]


def test_template_kwargs_add_vision_id():
    chat = [typed("user", IMG, IMG, VID, "Which differ?")]
    for flag in (False, True):
        expected, _ = hf_render(ref.QWEN2_VL, chat, add_generation_prompt=True, add_vision_id=flag)
        assert render_chat_template(ref.QWEN2_VL, chat, add_generation_prompt=True, add_vision_id=flag) == expected
    assert "Picture 2: <|vision_start|>" in expected and "Video 1: " in expected


@pytest.mark.parametrize("field", [True, "content"])
def test_continue_final_message_equal_hf(field):
    chats = [(ref.LLAMA_3, STRING_CHATS[1] + [{"role": "assistant", "content": "Why did the  "}]),
             (ref.LLAVA_1_5, [typed("user", IMG, "Describe."), typed("assistant", "It is a")]),
             (ref.QWEN2_VL, [typed("user", "Hi"), typed("assistant", IMG, "Partial", " text")])]
    for template, chat in chats:
        expected, _ = hf_render(template, chat, continue_final_message=field, **SPECIALS)
        assert render_chat_template(template, chat, continue_final_message=field, **SPECIALS) == expected
    assert expected.endswith("Partial text")


def test_reasoning_fields_equal_hf():
    template = ("{% for m in messages %}<{{ m.role }}>{% if m.reasoning_content %}[think]{{ m.reasoning_content }}"
                "[/think]{% endif %}{% if m.thinking %}({{ m.thinking }}){% endif %}{{ m.content }}{% endfor %}")
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "reasoning": "four", "content": "4"}]
    for field in (False, "reasoning_content", "reasoning", "thinking"):
        kwargs = dict(continue_final_message=field) if field else {}
        (expected,), _ = render_jinja_template([chat], chat_template=template, **kwargs)
        assert render_chat_template(template, chat, **kwargs) == expected, field


def test_sandbox_keeps_python_internals_out():
    chat = [{"role": "user", "content": "hi"}]
    for template in ["{{ ''.__class__.__mro__ }}", "{{ messages.__class__.__base__.__subclasses__() }}",
                     "{{ cycler.__init__.__globals__ }}", "{{ messages.append(1) }}",
                     "{% set ns = namespace(__class__=1) %}", "{{ dict.__class__ }}x{{ dict.__call__.__globals__ }}"]:
        with pytest.raises(ChatTemplateError, match="sandbox forbids"):
            render_chat_template(template, chat)
    # a rich object handed in a message is only its type's name to the template
    obj = type("Secret", (), {"token": "xyz"})()
    chat = [typed("user", {"type": "image", "image": obj})]
    assert render_chat_template("{{ messages[0]['content'][0]['image'] }}", chat) == "<Secret>"


def test_raise_exception_message_is_surfaced():
    chat = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ChatTemplateError, match="Conversation roles must alternate user/assistant"):
        render_chat_template(ref.MISTRAL_INST, chat, **SPECIALS)
    with pytest.raises(ChatTemplateError, match=r"not valid jinja2 \(line 1\)"):
        render_chat_template("{% for m in messages %}", chat)
    with pytest.raises(ChatTemplateError, match="failed while rendering .TypeError.*string content or typed parts"):
        render_chat_template(ref.MISTRAL_INST, [typed("user", "typed parts where the template wants a string")],
                             **SPECIALS)


def test_tojson_strftime_loopcontrols_equal_hf():
    template = ("{{ messages|tojson }}|{{ tools|tojson(indent=2) }}|{{ {'b': 1, 'a': '<é>'}|tojson }}|"
                "{% for m in messages %}{% if loop.index0 == 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}|"
                "{% for m in messages %}{% if m.role == 'user' %}{% continue %}{% endif %}{{ m.content }}{% endfor %}|"
                "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}|"
                "{{ dict(a=1) }}{{ strftime_now('%Y') }}")
    chat = STRING_CHATS[1]
    tools = [{"name": "f", "description": "東京 <tool>", "parameters": {"z": 1, "a": 2}}]
    (expected,), _ = render_jinja_template([chat], chat_template=template, tools=tools)
    assert render_chat_template(template, chat, tools=tools) == expected
    assert '"東京 <tool>"' in expected and expected.endswith(str(datetime.now().year))


def test_bad_messages_and_arguments():
    with pytest.raises(TypeError, match="message 1 must be a dict"):
        render_chat_template(ref.LLAMA_3, [{"role": "user", "content": "a"}, "hello"])
    with pytest.raises(ValueError, match="message 0 has role 'robot'; expected one of system"):
        render_chat_template(ref.LLAMA_3, [{"role": "robot", "content": "a"}])
    with pytest.raises(ValueError, match="content type 'audio' is not known"):
        render_chat_template(ref.QWEN2_VL, [typed("user", {"type": "audio"})])
    with pytest.raises(ValueError, match="continue_final_message and add_generation_prompt"):
        render_chat_template(ref.LLAMA_3, STRING_CHATS[0], continue_final_message=True, add_generation_prompt=True)
    with pytest.raises(TypeError, match="tools must be a list of dicts"):
        render_chat_template(ref.LLAMA_3, STRING_CHATS[0], tools=[len])
    with pytest.raises(TypeError, match="documents must be a list of dicts"):
        render_chat_template(ref.LLAMA_3, STRING_CHATS[0], documents=["a text"])
    with pytest.raises(ValueError, match="no chat template"):
        pick_template(None)
    assert pick_template({"default": "a", "tool_use": "b"}, tools=[{}]) == "b"
    assert pick_template({"default": "a", "rag": "c"}, "rag") == "c"
    with pytest.raises(ValueError, match=r"none is named 'default'.*\['x', 'y'\]"):
        pick_template({"x": "1", "y": "2"})


def tiny_tokenizer_folder(path):
    """A small Llama 3 style tokenizer folder (trained here, offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["hello world"] * 5, trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>").save_pretrained(path)
    return path


def test_tokenizer_folder_precedence_equal_hf(tmp_path):
    folder = tiny_tokenizer_folder(tmp_path / "tok")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())

    def both():
        hf = transformers.AutoTokenizer.from_pretrained(folder).chat_template
        return load_chat_template(folder), hf

    assert load_chat_template(folder) is None
    config_path.write_text(json.dumps(config | {"chat_template": "from config"}))
    assert both() == ("from config", "from config")
    named = [{"name": "default", "template": "d"}, {"name": "tool_use", "template": "t"}]
    config_path.write_text(json.dumps(config | {"chat_template": named}))
    assert both() == ({"default": "d", "tool_use": "t"},) * 2
    (folder / "chat_template.jinja").write_text("from jinja")   # the file wins over the config
    assert both() == ("from jinja", "from jinja")
    (folder / "additional_chat_templates").mkdir()
    (folder / "additional_chat_templates" / "rag.jinja").write_text("rag one")
    assert both() == ({"default": "from jinja", "rag": "rag one"},) * 2


def test_processor_folder_precedence(tmp_path):
    # transformers' ProcessorMixin.get_processor_dict: processor_config.json's entry, then the legacy
    # chat_template.json, then chat_template.jinja.
    folder = tmp_path
    assert load_chat_template(folder, for_processor=True) is None
    (folder / "chat_template.jinja").write_text("jinja")
    assert load_chat_template(folder, for_processor=True) == "jinja"
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": "legacy json"}))
    assert load_chat_template(folder, for_processor=True) == "legacy json"
    (folder / "processor_config.json").write_text(json.dumps({"chat_template": "in config"}))
    assert load_chat_template(folder, for_processor=True) == "in config"
    (folder / "processor_config.json").write_text(json.dumps({"chat_template": None}))
    (folder / "additional_chat_templates").mkdir()
    (folder / "additional_chat_templates" / "x.jinja").write_text("x")
    with pytest.raises(ValueError, match="both a legacy chat_template.json and additional_chat_templates"):
        load_chat_template(folder, for_processor=True)


def test_hand_written_llava_hf_equals_the_real_llava_1_5_template():
    """conversation.py's readable llava_hf template renders what the checkpoint's jinja2 template does;
    its loss spans are the template's {% generation %} spans with the space after "ASSISTANT:" in front."""
    from minivlm.processing.conversation import TEMPLATES, render
    exchanges = [[("What are these?", None)], [("What are these?", "Two cats."), ("And  the colour?\n", None)],
                 [("Describe é 東京.", "A  city.\n"), ("More?", "No.")]]
    for exchange in exchanges:
        turns, messages = [], []
        for i, (question, answer) in enumerate(exchange):
            turns.append(("human", ("<image>\n" if i == 0 else "") + question))
            messages.append(typed("user", *([IMG] if i == 0 else []), question))
            if answer is not None:
                turns.append(("gpt", answer))
                messages.append(typed("assistant", answer))
        gen = exchange[-1][1] is None
        hand = render(TEMPLATES["llava_hf"], turns, add_generation_prompt=gen)
        real = render_with_spans(ref.LLAVA_1_5, messages, add_generation_prompt=gen)
        assert hand.text == real.text == hf_render(ref.LLAVA_1_5, messages, add_generation_prompt=gen)[0]
        assert [(a + 1, b) for a, b in hand.spans] == real.generation_spans
        assert all(hand.text[a] == " " for a, _ in hand.spans)
