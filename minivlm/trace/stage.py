"""The trace's record of one stage, its comparison against transformers, and the printed table.

Every family's trace (minivlm/trace/<family>.py) returns a list of Stages in the order the model
computes them; its reference function returns {stage name: tensor} from transformers' model. Ids
(prompt tokens, generated tokens ...) compare as equal / differ, floats as max |diff|.
"""
from dataclasses import dataclass, field


@dataclass
class Stage:
    name: str
    value: object            # a tensor, a PIL image (or a list of them), ids
    shape: str               # what the table prints
    note: str = ""
    diff: object = None      # max |diff| against the reference (float), or "equal" / "differ"
    extra: dict = field(default_factory=dict)   # what a picture of the stage needs besides the value
    ids: bool = False        # token ids: compared for equality, not by a float diff


def shape(t) -> str:
    """'(1, 65, 32)': a tensor's shape as the table prints it."""
    return str(tuple(t.shape))


def compare(stages: list, reference: dict) -> list:
    """Fill each stage's diff from the reference's tensor of the same name."""
    for stage in stages:
        ref = reference.get(stage.name)
        if ref is None:
            continue
        mine = stage.value
        if stage.ids:
            stage.diff = "equal" if mine.shape == ref.shape and bool((mine.cpu() == ref.cpu()).all()) else "differ"
        elif mine.shape != ref.shape:
            stage.diff = f"shape {tuple(ref.shape)}"
        else:
            stage.diff = (mine.float().cpu() - ref.float().cpu()).abs().max().item()
    return stages


def worst_diff(stages: list):
    """(the largest float diff or None, whether every compared id stage was equal); a shape mismatch
    counts as infinitely far."""
    floats = [s.diff for s in stages if isinstance(s.diff, float)]
    if any(isinstance(s.diff, str) and s.diff.startswith("shape") for s in stages):
        floats.append(float("inf"))
    ids_equal = all(s.diff == "equal" for s in stages if s.ids and s.diff is not None)
    return (max(floats) if floats else None), ids_equal


def format_stages(stages: list, with_reference: bool) -> str:
    head = ["#", "stage", "shape", "vs HF (max |diff|)" if with_reference else "", "what happened"]
    rows = []
    for i, s in enumerate(stages, 1):
        diff = "" if s.diff is None else s.diff if isinstance(s.diff, str) else f"{s.diff:.1e}"
        rows.append([str(i), s.name, s.shape, diff, s.note])
    widths = [max(len(r[k]) for r in rows + [head]) for k in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in [head] + rows]
    return "\n".join(line.rstrip() for line in lines)


def token_view(ids, tokenizer, placeholders=(), limit=60) -> str:
    """'<s> U S E R : ▁ [<image> x 64] <0x0A> W h a t ...': runs of a placeholder id folded.
    `placeholders` are the ids to fold (image, video tokens)."""
    ids = [int(i) for i in ids]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    out, i = [], 0
    while i < len(ids):
        j = i
        if ids[i] in placeholders:
            while j < len(ids) and ids[j] == ids[i]:
                j += 1
            out.append(f"[{tokens[i]} x {j - i}]")
            i = j
        else:
            out.append(str(tokens[i]))
            i += 1
    text = " ".join(out)
    return text if len(text) <= limit * 4 else text[:limit * 4] + " ..."


def first_stop(ids: list, eos) -> list:
    """The ids up to (not including) the first end-of-sequence id."""
    eos = {eos} if isinstance(eos, int) else set(eos or ())
    return ids[:next((i for i, t in enumerate(ids) if t in eos), len(ids))]
