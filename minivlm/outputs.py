"""Model outputs: a dict whose fields are also attributes, named as transformers names them.

`out.logits`, `out["logits"]` and `"logits" in out` all work, so code written against HF's
ModelOutput reads the same here. Fields that a forward pass did not compute are simply absent.
"""


class ModelOutput(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this output has no field {name!r}; it has {sorted(self)}") from None

    def __setattr__(self, name, value):
        self[name] = value

    def to_tuple(self):
        return tuple(self.values())
