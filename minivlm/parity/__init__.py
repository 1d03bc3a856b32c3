"""Parity cases per family; `all_cases()` is what `python -m minivlm parity` runs."""
import importlib

from .harness import FP32_TOLERANCE, ParityCase, assert_parity, check_case, format_table, run_case

# One module per family, each with a CASES list. A new family adds its name here.
FAMILIES = ["vit", "llama", "mistral", "qwen2", "opt", "blip", "blip2", "llava", "clip", "siglip", "llava_next",
            "llava_onevision", "qwen2_vl"]


def all_cases(families=None):
    cases = []
    for name in families or FAMILIES:
        cases += importlib.import_module(f"{__name__}.{name}").CASES
    return cases
