"""Conversation templates: how a list of (human, gpt) turns becomes one prompt string.

The templates are DATA (a Template per name, facts taken from the original LLaVA repo's
llava/conversation.py and the llava-hf chat template); `render` is the one function that reads
them. Besides the text, `render` returns the character spans that carry the loss — the assistant
replies and the separator that ends them — so the label mask is computed from the same place the
text is (minivlm/data/llava_dataset.py turns spans into token labels).

    >>> r = render(TEMPLATES["vicuna_v1"], [("human", "<image>\\nWhat is it?"), ("gpt", "A cat.")])
    >>> r.text
    "A chat between ... user's questions. USER: <image>\\nWhat is it? ASSISTANT: A cat.</s>"
    >>> [r.text[a:b] for a, b in r.spans]
    [' A cat.</s>']

Styles (the original's SeparatorStyle):
    two      system sep USER: q sep ASSISTANT: a sep2 USER: ...    (vicuna_v1 / llava_v1)
    llama_2  [INST] <<SYS>>\\nsystem\\n<</SYS>>\\n\\nq [/INST] a </s><s>[INST] q2 [/INST] ...
    plain    <image>a\\n   — pretraining on captions: the human turn is reduced to the image
"""
from dataclasses import dataclass

DEFAULT_IMAGE_TOKEN = "<image>"

HUMAN, GPT = "human", "gpt"
# LLaVA's JSON says "human"/"gpt"; chat APIs say "user"/"assistant". Both are accepted.
ROLE_ALIASES = {"human": HUMAN, "user": HUMAN, "gpt": GPT, "assistant": GPT}


@dataclass(frozen=True)
class Template:
    name: str
    style: str             # "two" | "llama_2" | "plain"
    system: str = ""
    roles: tuple = ("USER", "ASSISTANT")
    sep: str = " "
    sep2: str | None = None


_VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                  "The assistant gives helpful, detailed, and polite answers to the user's questions.")

TEMPLATES = {t.name: t for t in [
    # LLaVA-1.5's instruction-tuning template (conv_vicuna_v1, also called "v1" / "llava_v1").
    Template("vicuna_v1", "two", _VICUNA_SYSTEM, ("USER", "ASSISTANT"), " ", "</s>"),
    # LLaVA on LLaMA-2-chat (conv_llava_llama_2): [INST] blocks, the system prompt in <<SYS>>.
    Template("llava_llama_2", "llama_2",
             "You are a helpful language and vision assistant. You are able to understand the visual content "
             "that the user provides, and assist the user with a variety of tasks using natural language.",
             ("USER", "ASSISTANT"), "<s>", "</s>"),
    # Stage-1 pretraining (conv_llava_plain): image then caption, no roles, no system prompt.
    Template("plain", "plain", "", ("", ""), "\n", None),
    # The llava-hf checkpoints' chat_template: "USER: <image>\n... ASSISTANT:", no system prompt, and
    # replies end with a space, not </s> (so train with vicuna_v1 to learn when to stop).
    Template("llava_hf", "two", "", ("USER", "ASSISTANT"), " ", " "),
]}
TEMPLATES["v1"] = TEMPLATES["llava_v1"] = TEMPLATES["vicuna_v1"]


@dataclass
class Rendered:
    text: str
    spans: list            # [(start, end)] character ranges of `text` that carry the loss


def get_template(name):
    if isinstance(name, Template):
        return name
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; known: {sorted(TEMPLATES)}") from None


def normalise_turns(turns):
    """[(role, text)] or LLaVA's [{"from": ..., "value": ...}] -> [(HUMAN|GPT, text)], checked to alternate."""
    out = []
    for i, turn in enumerate(turns):
        role, text = (turn["from"], turn["value"]) if isinstance(turn, dict) else turn
        if role not in ROLE_ALIASES:
            raise ValueError(f"turn {i} comes from {role!r}; expected one of {sorted(ROLE_ALIASES)}")
        role = ROLE_ALIASES[role]
        expected = HUMAN if i % 2 == 0 else GPT
        if role != expected:
            raise ValueError(f"turn {i} comes from {role!r} but turns must alternate human, gpt, human, ... "
                             f"(turn {i} should be {expected!r})")
        out.append((role, text))
    return out


def render(template, turns, add_generation_prompt=False):
    """Turns -> Rendered(text, spans). With add_generation_prompt the text ends where the assistant's
    reply would begin (after "ASSISTANT:" / "[/INST]"): the prompt for generate()."""
    t = get_template(template)
    turns = normalise_turns(turns)
    if add_generation_prompt and turns and turns[-1][0] == GPT:
        raise ValueError("add_generation_prompt needs the conversation to end with a human turn")
    return {"two": _render_two, "llama_2": _render_llama_2, "plain": _render_plain}[t.style](
        t, turns, add_generation_prompt)


class _Builder:
    """Appends text pieces and records which ones are trained on."""

    def __init__(self):
        self.text, self.spans = "", []

    def add(self, piece, trained=False):
        if trained and piece:
            self.spans.append((len(self.text), len(self.text) + len(piece)))
        self.text += piece

    def result(self):
        return Rendered(self.text, self.spans)


def _render_two(t, turns, gen):
    user, assistant = t.roles
    b = _Builder()
    if t.system:
        b.add(t.system + t.sep)
    for role, text in turns:
        if role == HUMAN:
            b.add(f"{user}: {text}{t.sep}")
        else:
            # The reply starts with the space after "ASSISTANT:": the tokenizer glues it to the reply's
            # first word, so the boundary sits before it (the original's "instruction_len - 2").
            b.add(f"{assistant}:")
            b.add(f" {text}{t.sep2}", trained=True)
    if gen:
        b.add(f"{assistant}:")
    return b.result()


def _render_llama_2(t, turns, gen):
    b = _Builder()
    for i, (role, text) in enumerate(turns):
        if role == HUMAN:
            if i == 0 and t.system:
                text = f"<<SYS>>\n{t.system}\n<</SYS>>\n\n{text}"
            # Every [INST] block after the first starts with <s>; the original strips the first one.
            b.add(f"{t.sep if i else ''}[INST] {text} [/INST]")
        else:
            b.add(f" {text} {t.sep2}", trained=True)
    return b.result()


def _render_plain(t, turns, gen):
    # preprocess_plain: exactly one exchange, the human turn replaced by the bare image token.
    if gen:
        return Rendered(DEFAULT_IMAGE_TOKEN, [])
    if len(turns) != 2 or DEFAULT_IMAGE_TOKEN not in turns[0][1]:
        raise ValueError(f"the 'plain' template takes one human turn holding {DEFAULT_IMAGE_TOKEN} and one reply, "
                         f"got {len(turns)} turn(s)")
    b = _Builder()
    b.add(DEFAULT_IMAGE_TOKEN)
    b.add(turns[1][1] + t.sep, trained=True)
    return b.result()


def prompt(template, question):
    """One question -> the text to generate from ("... USER: <image>\\nq ASSISTANT:")."""
    return render(template, [(HUMAN, question)], add_generation_prompt=True).text
