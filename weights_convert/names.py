"""Our key names -> the names transformers 5 stores them under: the family's key map run backwards.

Used to save a model trained here in transformers' layout (minivlm/train/export.py) and to name a
LoRA adapter's tensors as PEFT does on the transformers model (minivlm/adapters/lora.py)."""
from .engine import template_regex


def stored_names(keymap, our_keys, in_memory=False):
    """[(rule, stored key, [our keys])]: for each rule, in order, the stored key it makes of our keys.
    The FIRST rule that produces a key wins (a file transformers loads); in_memory=True: the LAST one,
    which is the name of the tensor inside a transformers 5 model where a family lists several
    spellings (families/llava.py: hub file, save_pretrained file, in memory) — what PEFT names.
    A rule that needs several of our keys (q, k, v -> in_proj) is used only when all of them are there."""
    our_keys = list(our_keys)
    present, done, out = set(our_keys), set(), []
    for rule in reversed(keymap.rules) if in_memory else keymap.rules:
        targets = rule.targets()
        first = template_regex(targets[0])
        for key in our_keys:
            m = first.match(key)
            if m is None or key in done:
                continue
            groups = m.groupdict()
            names = [t.format(**groups) for t in targets]
            if any(n in done or n not in present for n in names):
                continue
            out.append((rule, rule.file.format(**groups), names))
            done.update(names)
    return out


def stored_name_of(keymap, our_keys, in_memory=True):
    """A function our key -> transformers' name for it (in_memory: inside the transformers model, as
    PEFT names it; else as a file stores it), over `our_keys` (one-to-one rules only); a KeyError names
    a key the map does not write."""
    table = {names[0]: stored for _, stored, names in stored_names(keymap, our_keys, in_memory) if len(names) == 1}

    def name(key):
        if key not in table:
            raise KeyError(f"{key!r} has no one-to-one rule in the key map")
        return table[key]
    return name
