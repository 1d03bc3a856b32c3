"""Chat templates: a checkpoint's own jinja2 template turns a list of messages into the prompt string.

Since 2023 a Hugging Face checkpoint carries its prompt format as a jinja2 template
(`chat_template.jinja`, or a "chat_template" entry in a JSON file). transformers renders it with a
few additions, and minivlm renders it the same way:

- a sandboxed, immutable environment: the template is code that came with a download, so it may
  not reach Python internals (`''.__class__`), call methods that mutate, or see rich objects (the
  messages are rebuilt from plain JSON types first, `plain_data`);
- `trim_blocks` / `lstrip_blocks` (a `{% ... %}` line leaves no newline or indentation behind) and
  the `{% break %}` / `{% continue %}` loop controls;
- `raise_exception(msg)`, `strftime_now(fmt)`, a `tojson` that keeps non-ASCII text and key order
  (jinja's own escapes HTML and sorts keys), and guarded `dict` / `namespace` globals;
- the `{% generation %} ... {% endgeneration %}` tag, which marks the assistant's text; its
  character spans become the `assistant_masks` that training turns into labels.

    >>> render_chat_template(LLAMA3, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)

The hand-written templates in conversation.py say the same formats in Python, for reading.
"""
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

# transformers' marker for continue_final_message: appended to the last message, found in the
# rendered text, and everything from it on is cut (so the model continues the message).
CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class ChatTemplateError(ValueError):
    """A template that cannot be rendered: its own raise_exception(...), a syntax error, a sandbox refusal."""


# --- the environment -----------------------------------------------------------------------------

class GenerationTracker(jinja2.ext.Extension):
    """`{% generation %}body{% endgeneration %}` renders body unchanged and, while tracking, records
    (start, end) character positions of body in the output. The start is the length of what the
    template has produced so far, as transformers' AssistantTracker counts it."""
    tags = {"generation"}

    def __init__(self, environment):
        super().__init__(environment)
        self.produced = None   # the output chunks so far (a list), or None when not tracking
        self.spans = None

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_mark", []), [], [], body).set_lineno(lineno)

    def _mark(self, caller):
        text = caller()
        if self.produced is not None:
            start = sum(len(chunk) for chunk in self.produced)
            self.spans.append((start, start + len(text)))
        return text

    @contextmanager
    def tracking(self, produced, spans):
        if self.produced is not None:
            raise RuntimeError("one template is being rendered twice at once with generation tracking")
        self.produced, self.spans = produced, spans
        try:
            yield
        finally:
            self.produced = self.spans = None


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' filter: plain json.dumps (jinja's tojson escapes <>&' for HTML and sorts keys).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


class SafeDict:
    """The template's `dict(...)`: builds a dict, exposes nothing else (no dict.__class__ to climb)."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class SafeNamespace(jinja2.utils.Namespace):
    """`namespace(...)` that refuses underscore names, which could shadow Python's own attributes."""

    def __init__(*args, **kwargs):  # jinja's signature trick: `namespace(self=1)` still works
        self, attrs = args[0], dict(*args[1:], **kwargs)
        for name in attrs:
            SafeNamespace.check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        SafeNamespace.check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a chat template may not set the attribute {name!r} on a namespace")


@lru_cache(maxsize=32)
def compile_template(template: str) -> jinja2.Template:
    """Template text -> a compiled template in its own sandboxed environment (cached by text)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now, dict=SafeDict(),
                       namespace=SafeNamespace)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template is not valid jinja2 (line {e.lineno}): {e.message}") from None


# --- what the template may see -------------------------------------------------------------------

def plain_data(value):
    """Rebuild a value from plain JSON types; anything else (a PIL image, a tensor) becomes the
    placeholder "<TypeName>" — templates only test whether an image key is there, and a rich
    object has methods the sandbox cannot judge (transformers does the same)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for base in (bool, str, int, float):  # subclasses (enums, numpy scalars) lose their extra methods
        if isinstance(value, base):
            return base(value)
    if isinstance(value, dict):
        return {plain_data(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_data(v) for v in value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return plain_data(value.item())
    return f"<{type(value).__name__}>"


# --- rendering -----------------------------------------------------------------------------------

@dataclass
class RenderedChat:
    text: str
    generation_spans: list   # [(start, end)] character ranges of text inside {% generation %} blocks


def render_chat_template(template: str, messages: list, *, add_generation_prompt: bool = False,
                         continue_final_message: bool | str = False, tools: list | None = None,
                         documents: list | None = None, **template_kwargs) -> str:
    """Messages -> the prompt string, as transformers' apply_chat_template(tokenize=False) renders it.
    template_kwargs become template variables (bos_token, Qwen2-VL's add_vision_id, ...)."""
    return render_with_spans(template, messages, add_generation_prompt=add_generation_prompt,
                             continue_final_message=continue_final_message, tools=tools, documents=documents,
                             track=False, **template_kwargs).text


def render_with_spans(template: str, messages: list, *, add_generation_prompt: bool = False,
                      continue_final_message: bool | str = False, tools: list | None = None,
                      documents: list | None = None, track: bool = True, **template_kwargs) -> RenderedChat:
    """Like render_chat_template, and also the character spans of the `{% generation %}` blocks
    (empty when the template has none, or when track is False)."""
    if continue_final_message and add_generation_prompt:
        raise ValueError("continue_final_message and add_generation_prompt cannot both be set: the first leaves "
                         "the last message open for the model to continue, the second starts a new assistant turn")
    if continue_final_message and track:
        raise ValueError("continue_final_message cannot be combined with assistant masks (the last reply is cut)")
    compiled = compile_template(template)
    messages = check_messages(messages)
    for name, items in (("tools", tools), ("documents", documents)):
        if items is not None and not all(isinstance(item, dict) for item in items):
            bad = next(item for item in items if not isinstance(item, dict))
            raise TypeError(f"{name} must be a list of dicts (JSON schemas for tools, {{'title', 'text'}} for "
                            f"documents); got a {type(bad).__name__}: {bad!r:.60} (minivlm does not turn Python "
                            f"functions into schemas: pass transformers.utils.get_json_schema(f))")
    final_text = None
    if continue_final_message:
        messages, final_text = tag_final_message(template, messages, continue_final_message)
    variables = plain_data(dict(template_kwargs, messages=messages, tools=tools, documents=documents,
                                add_generation_prompt=add_generation_prompt))
    spans, produced = [], []
    try:
        if track:
            tracker = compiled.environment.extensions[GenerationTracker.identifier]
            with tracker.tracking(produced, spans):
                for chunk in compiled.generate(**variables):
                    produced.append(chunk)
            text = "".join(produced)
        else:
            text = compiled.render(**variables)
    except jinja2.exceptions.SecurityError as e:
        raise ChatTemplateError(f"the chat template tried something the sandbox forbids: {e}") from None
    except jinja2.exceptions.TemplateError as e:  # raise_exception(...) and runtime template errors
        raise ChatTemplateError(f"the chat template raised an error: {e.message}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as e:
        # Python errors inside the template: most often content of the other shape (a string where
        # the template iterates typed parts, or the reverse).
        raise ChatTemplateError(f"the chat template failed while rendering ({type(e).__name__}: {e}); does it "
                                f"expect string content or typed parts [{{'type': 'text', 'text': ...}}]?") from e
    if continue_final_message:
        text = cut_at_tag(text, final_text)
    return RenderedChat(text, spans)


KNOWN_ROLES = ("system", "developer", "user", "assistant", "tool", "ipython")
CONTENT_TYPES = ("text", "image", "video")


def check_messages(messages):
    """A list of dict messages with a known role and string or typed-part content; keys whose value is
    None are dropped, as transformers does (an API's `content=None` would otherwise render "None").
    transformers leaves these checks to the template; a wrong role then renders silently or fails deep
    inside it, so minivlm checks first."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TypeError(f"message {i} must be a dict with 'role' and 'content', got {type(message).__name__}: "
                            f"{message!r:.80}")
        message = {k: v for k, v in message.items() if v is not None}
        if message.get("role") not in KNOWN_ROLES:
            raise ValueError(f"message {i} has role {message.get('role')!r}; expected one of {', '.join(KNOWN_ROLES)}")
        content = message.get("content", "")
        if not isinstance(content, str):
            if not isinstance(content, (list, tuple)):
                raise TypeError(f"message {i}'s content must be a string or a list of typed parts, "
                                f"got {type(content).__name__}")
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in CONTENT_TYPES:
                    raise ValueError(f"message {i}, part {j}: content type {kind!r} is not known; expected a dict "
                                     f"with 'type' one of {', '.join(CONTENT_TYPES)}, got {part!r:.80}")
        out.append(alias_reasoning(message))
    return out


# Names a message's reasoning comes under; templates read the first (Qwen3, DeepSeek) or "thinking" (gpt-oss).
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def alias_reasoning(message):
    """A message's reasoning, under whichever name it came, also as reasoning_content and thinking
    (transformers' _alias_reasoning_fields), so a template finds it under the name it reads."""
    reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
    return message if reasoning is None else {"thinking": reasoning, **message, "reasoning_content": reasoning}


def tag_final_message(template, messages, field):
    """continue_final_message: append CONTINUE_TAG to the last message's text (its last text part
    for typed content) so that cut_at_tag can find where the message ends in the output."""
    if not messages:
        raise ValueError("continue_final_message is set but the conversation is empty")
    field = field if isinstance(field, str) else "content"
    last = dict(messages[-1])
    final = last.get(field)
    if final is None:
        raise ValueError(f"continue_final_message is set but the final message has no {field!r} to continue")
    # a reasoning text is copied under several names (alias_reasoning): tag each copy the template may read
    fields = [f for f in REASONING_FIELDS if last.get(f) == final] if field in REASONING_FIELDS else [field]
    if not any(f in template for f in fields):
        raise ValueError(f"continue_final_message is set to {field!r} but the chat template never reads that field")
    if isinstance(final, (list, tuple)):
        parts = [dict(p) if isinstance(p, dict) else p for p in final]
        for part in reversed(parts):
            if isinstance(part, dict) and "text" in part:
                final, part["text"] = part["text"], part["text"] + CONTINUE_TAG
                break
        else:
            raise ValueError("continue_final_message is set but the final message has no text part to continue")
        last[field] = parts
    else:
        for f in fields:
            last[f] = last[f] + CONTINUE_TAG
    return [*messages[:-1], last], final


def cut_at_tag(text, final):
    tag = CONTINUE_TAG.strip()
    if final.strip() not in text or tag not in text:
        raise ValueError("continue_final_message is set but the final message does not appear in the rendered chat "
                         f"(the template changes it); final message: {final.strip()!r}")
    at = text.rindex(tag)
    # A template that keeps spacing leaves the whole tag; one that strips the message left it trimmed.
    return text[:at] if text[at:at + len(CONTINUE_TAG)] == CONTINUE_TAG else text[:at].rstrip()


def has_generation_blocks(template: str) -> bool:
    return re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


# --- where a folder keeps its template -----------------------------------------------------------

def load_chat_template(folder, for_processor: bool = False) -> str | dict | None:
    """The chat template(s) a HF folder holds, read in transformers' order of precedence; a str, or
    {name: template} when there are several (additional_chat_templates/NAME.jinja, or a list in the config);
    None when the folder has none.

    Tokenizer (PreTrainedTokenizerBase.from_pretrained): chat_template.jinja (+ additional_chat_templates/*.jinja)
    over tokenizer_config.json's "chat_template" (a string or a list of {"name", "template"}).
    Processor (ProcessorMixin.get_processor_dict): processor_config.json's "chat_template" (an old
    layout transformers still honours, with a warning), then the legacy chat_template.json, then
    chat_template.jinja (+ additional_chat_templates/*.jinja)."""
    folder = Path(folder)
    if for_processor:
        config = read_json_if(folder / "processor_config.json")
        if config.get("chat_template") is not None:
            return named_templates(config["chat_template"])
        legacy = folder / "chat_template.json"
        if legacy.is_file():
            if any((folder / "additional_chat_templates").glob("*.jinja")):
                raise ValueError(f"{folder} has both a legacy chat_template.json and "
                                 f"additional_chat_templates/*.jinja; "
                                 f"transformers refuses this combination too: keep one")
            value = read_json_if(legacy).get("chat_template")
            if value is None:
                raise ValueError(f"{legacy} has no 'chat_template' entry")
            return named_templates(value)
        return jinja_files(folder)
    found = jinja_files(folder)
    if found is not None:
        return found
    value = read_json_if(folder / "tokenizer_config.json").get("chat_template")
    return None if value is None else named_templates(value)


def jinja_files(folder):
    templates = {path.stem: path.read_text(encoding="utf-8")
                 for path in sorted((folder / "additional_chat_templates").glob("*.jinja"))}
    if (folder / "chat_template.jinja").is_file():
        templates["default"] = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    return named_templates(templates) if templates else None


def named_templates(value):
    """A template string, a {name: template} dict or tokenizer_config's [{"name", "template"}] list ->
    a str (a lone "default") or a dict."""
    if isinstance(value, (list, tuple)):
        value = {t["name"]: t["template"] for t in value}
    if isinstance(value, dict) and list(value) == ["default"]:
        return value["default"]
    if not isinstance(value, (str, dict)):
        raise ValueError(f"a chat template must be a string, a dict or a list of named templates, "
                         f"got {type(value).__name__}")
    return value


def read_json_if(path):
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def pick_template(templates, chat_template: str | None = None, tools=None, owner="tokenizer") -> str:
    """The template to render: the argument (a template text, or the name of one of the folder's),
    else "tool_use" when tools are given and the folder has one, else the folder's default."""
    if isinstance(templates, dict):
        if chat_template is not None:
            return templates.get(chat_template, chat_template)
        if tools is not None and "tool_use" in templates:
            return templates["tool_use"]
        if "default" in templates:
            return templates["default"]
        raise ValueError(f"this {owner} has several chat templates and none is named 'default': pass "
                         f"chat_template= one of {sorted(templates)}")
    if chat_template is not None:
        return chat_template
    if templates is None:
        raise ValueError(f"this {owner} has no chat template (the folder holds no chat_template.jinja, "
                         f"chat_template.json or 'chat_template' entry): pass chat_template=... or use "
                         f"minivlm.processing.conversation's hand-written templates")
    return templates
