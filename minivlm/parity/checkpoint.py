"""A parity case for a local HF checkpoint folder: the reference is transformers' own class for
config.json's architecture loaded from the folder, ours is load_pretrained on the same folder, and
the inputs and compared fields are those of the family's tiny case for that architecture."""
from pathlib import Path

from . import all_cases
from .harness import ParityCase


def checkpoint_case(folder):
    folder = Path(folder)
    from weights_convert.checkpoint import read_config
    from weights_convert.registry import family_for
    config = read_config(folder)
    arch = config["architectures"][0] if config.get("architectures") else None
    family = family_for(config, folder).name
    template = next((c for c in all_cases([family]) if type(c.build_reference()).__name__ == arch), None)
    if template is None:
        raise ValueError(f"no parity case for {arch} in family {family!r} to take inputs from")

    def build():
        import transformers
        return getattr(transformers, arch).from_pretrained(folder)

    return ParityCase(family, f"{folder.name} ({arch})", build, template.make_inputs, template.fields,
                      template.generate, template.valid_positions, folder=str(folder),
                      generate_inputs=template.generate_inputs)
