"""The one strict engine that turns a checkpoint's tensors into a minivlm state dict.

A family describes its checkpoint as data, a KeyMap:

    KeyMap(
        rules=[Rule("encoder.layer.{i}.attention.attention.query.{wb}", "encoder.layers.{i}.attn.q_proj.{wb}"),
               Rule("embeddings.cls_token", "cls_token", flatten), ...],
        skip=["embeddings.position_ids"],                    # stored but not needed, on purpose
        tied={"lm_head.weight": "embed_tokens.weight"})      # left out of the file, shares a tensor

Placeholders in templates: {i} / {j} match a layer number, {wb} matches weight|bias,
any other {name} matches one dotted name part. A rule may map one stored tensor to several model
tensors (a fused qkv split into q, k, v) through its transform.

`plan` is strict. Every model tensor must be filled exactly once, every stored tensor must be
used or declared skipped, and shapes must agree — otherwise it raises, naming the keys as stored
in the file, the shapes and the file, every problem at once. It needs only names and shapes (meta
tensors), so a checkpoint is judged before any of its data is read; `convert` applies a plan to
tensors in memory, and load_pretrained streams it from disk.
"""
import re
from dataclasses import dataclass, field


from .errors import CheckpointError, MissingWeightsError, ShapeMismatchError, UnusedWeightsError

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_PATTERNS = {"i": r"\d+", "j": r"\d+", "wb": r"weight|bias"}


def template_regex(template):
    """'a.{i}.b.{wb}' -> regex with named groups, dots escaped."""
    parts, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[pos:m.start()]))
        name = m.group(1)
        parts.append(f"(?P<{name}>{_PATTERNS.get(name, r'[A-Za-z0-9_]+')})")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts) + r"\Z")


@dataclass
class Rule:
    file: str                          # template of the key as stored
    model: str | tuple                 # template(s) of minivlm key(s)
    transform: callable = None         # tensor -> tensor, or -> tuple of tensors for a tuple of model keys

    def __post_init__(self):
        self.pattern = template_regex(self.file)

    def targets(self):
        return self.model if isinstance(self.model, tuple) else (self.model,)


@dataclass
class KeyMap:
    rules: list
    skip: list = field(default_factory=list)       # file-key templates ignored on purpose
    tied: dict = field(default_factory=dict)       # model key -> model key whose tensor it shares

    def __post_init__(self):
        self.rules = [r if isinstance(r, Rule) else Rule(*r) for r in self.rules]
        self._skip = [template_regex(s) for s in self.skip]

    def __add__(self, other):
        return KeyMap(self.rules + other.rules, self.skip + other.skip, {**self.tied, **other.tied})

    def prefixed(self, file_prefix, model_prefix):
        """The same map for a sub-model stored under file_prefix and living under model_prefix."""
        return KeyMap([Rule(file_prefix + r.file, tuple(model_prefix + t for t in r.targets())
                            if isinstance(r.model, tuple) else model_prefix + r.model, r.transform)
                       for r in self.rules],
                      [file_prefix + s for s in self.skip],
                      {model_prefix + k: model_prefix + v for k, v in self.tied.items()})

    def match(self, key):
        """(rule, group values) of the first rule matching a stored key, or None."""
        for rule in self.rules:
            m = rule.pattern.match(key)
            if m:
                return rule, m.groupdict()
        return None

    def skipped(self, key):
        return any(p.match(key) for p in self._skip)


def _list(keys, limit=12):
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return "\n  " + "\n  ".join(keys[:limit]) + more


def file_spellings(keymap, model_key):
    """How a file would spell the tensor that fills our `model_key`: every stored key the map accepts
    for it (LLaVA's tower has three spellings), marked when the stored tensor is fused (qkv)."""
    found = []
    for rule in keymap.rules:
        for target in rule.targets():
            m = template_regex(target).match(model_key)
            if m is None:
                continue
            try:
                spelling = rule.file.format(**m.groupdict())
            except KeyError:  # the file key has a placeholder the model key does not fix
                spelling = rule.file
            found.append(spelling + (" (fused, split by the map)" if len(rule.targets()) > 1 else ""))
    return list(dict.fromkeys(found))


def _missing_line(keymap, key):
    spellings = file_spellings(keymap, key)
    if not spellings:
        return f"{key} (no rule of the key map fills it)"
    return f"{' or '.join(spellings)}   (minivlm: {key})"


@dataclass
class Step:
    """One stored tensor's way into the model: read `key` from `file`, apply `transform`, fill `targets`."""
    key: str
    file: str
    transform: callable
    targets: tuple


@dataclass
class Plan:
    steps: list                        # in file order
    tied: dict                         # model key -> model key it copies (left out of the file on purpose)


def plan(stored, keymap, expected, where="checkpoint"):
    """Check a checkpoint against a model without reading any data, and say how to fill the model.

    stored: {file key: StoredTensor} (meta tensors are enough: transforms only reshape and split, so
    they run on shapes); expected: the model's state_dict (names and shapes; meta is enough too).
    Every problem is collected and raised at once: tensors of the wrong shape, unused tensors,
    model tensors filled twice, missing tensors (named as the file would spell them). The error's
    class is that of the first kind found in that order (ShapeMismatchError, UnusedWeightsError,
    CheckpointError, MissingWeightsError); its message lists them all.
    """
    steps, source = [], {}
    shapes, unused, twice = [], [], []
    for key, item in stored.items():
        hit = keymap.match(key)
        if hit is None:
            if not keymap.skipped(key):
                unused.append(f"{key} {tuple(item.tensor.shape)} in {item.file}")
            continue
        rule, groups = hit
        targets = [t.format(**groups) for t in rule.targets()]
        try:
            tensors = rule.transform(item.tensor) if rule.transform else item.tensor
        except Exception as e:
            shapes.append(f"cannot convert {key} {tuple(item.tensor.shape)} from {item.file}: {e}")
            continue
        tensors = tensors if isinstance(tensors, tuple) else (tensors,)
        kept = []
        for target, tensor in zip(targets, tensors, strict=True):
            if target not in expected:
                unused.append(f"{key} {tuple(item.tensor.shape)} in {item.file} (would fill {target!r}, "
                              f"which this model does not have)")
                continue
            if target in source:
                twice.append(f"{target!r} is filled twice: by {source[target]} and by {key} ({item.file})")
                continue
            want = tuple(expected[target].shape)
            if tuple(tensor.shape) != want:
                converted = f" (converted to {tuple(tensor.shape)})" if tensor is not item.tensor else ""
                shapes.append(f"{key} in {item.file} has shape {tuple(item.tensor.shape)}{converted}"
                              f" but the model's {target!r} needs {want}")
            source[target] = f"{key} ({item.file})"
            kept.append(target)
        if kept:
            steps.append(Step(key, item.file, rule.transform, tuple(targets)))
    tied = {k: twin for k, twin in keymap.tied.items() if k in expected and k not in source and twin in source}
    missing = [_missing_line(keymap, k) for k in expected if k not in source and k not in tied]
    problems = [
        (ShapeMismatchError, shapes, f"{len(shapes)} tensor(s) in the {where} do not fit the model's shapes:"),
        (UnusedWeightsError, unused, f"{len(unused)} tensor(s) in the {where} are not used by the model:"),
        (CheckpointError, twice, f"{len(twice)} model tensor(s) would be filled twice:"),
        (MissingWeightsError, missing, f"{len(missing)} model tensor(s) are not in the {where}; expected in the "
                                       f"file as:"),
    ]
    found = [(cls, lines, title) for cls, lines, title in problems if lines]
    if found:
        message = "\n".join(title + _list(lines) for _, lines, title in found)
        if unused:
            message += "\n(unused tensors: a wrong architecture or config, or a key map that lacks a rule)"
        raise found[0][0](message)
    return Plan(steps, tied)


def convert(stored, keymap, expected, where="checkpoint"):
    """stored: {file key: StoredTensor} with data; expected: the model's state_dict (for names and shapes).

    Returns {model key: tensor} with every expected key filled; raises CheckpointError otherwise
    (see `plan`). load_pretrained streams the same plan tensor by tensor instead (weights_convert/load.py).
    """
    out = {}
    for step in plan(stored, keymap, expected, where).steps:
        tensor = stored[step.key].tensor
        tensors = step.transform(tensor) if step.transform else tensor
        for target, t in zip(step.targets, tensors if isinstance(tensors, tuple) else (tensors,)):
            if target in expected:
                out[target] = t
    for key, twin in keymap.tied.items():
        if key in expected and key not in out and twin in out:
            out[key] = out[twin]
    return out


# Transforms used by several families -------------------------------------------------------------

def squeeze_leading(n):
    """Drop n leading axes of size one: HF stores cls tokens as (1, 1, D), ViT positions as (1, N, D)."""
    def transform(t):
        if tuple(t.shape[:n]) != (1,) * n:
            raise ValueError(f"expected {n} leading axes of size 1, got shape {tuple(t.shape)}")
        return t.reshape(t.shape[n:])
    transform.inverse = lambda t: t.reshape((1,) * n + tuple(t.shape))  # ours -> stored (train/export.py)
    return transform


def split_in_three(t):
    """A fused (3D, ...) q/k/v tensor -> its q, k, v thirds (BLIP's qkv, MultiheadAttention's in_proj)."""
    if t.shape[0] % 3:
        raise ValueError(f"a fused qkv tensor needs a first dimension divisible by 3, got {tuple(t.shape)}")
    return tuple(t.chunk(3, dim=0))


__all__ = ["Rule", "KeyMap", "convert", "squeeze_leading", "split_in_three", "CheckpointError"]
