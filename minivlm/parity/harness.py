"""Parity with the transformers reference, measured: build HF's model, convert it, run both, compare.

A ParityCase says how to build a reference model (from a tiny config, seeded) and its inputs, and
which output fields to compare. `run_case` saves the reference with save_pretrained, loads it back
through weights_convert.load_pretrained — the same path a real checkpoint takes — feeds both the
same inputs and returns the max |diff| per field. The tests and `python -m minivlm parity` both
run these cases, so what the CLI prints is what the tests assert.
"""
import tempfile
from dataclasses import dataclass

import torch

# DESIGN.md's budget for fp32 on CPU (aim: 1e-5).
FP32_TOLERANCE = 1e-4


@dataclass
class ParityCase:
    family: str
    name: str
    build_reference: callable            # () -> transformers model, fp32, eval()
    make_inputs: callable                # (reference model, generator) -> dict of keyword inputs
    fields: tuple                        # output fields compared, HF's names
    generate: dict = None                # kwargs for a greedy generate() comparison, or None
    valid_positions: callable = None     # (inputs) -> bool (B, L) of positions to compare, or None
    folder: str = None                   # a real checkpoint folder: load ours from it, not a re-save
    generate_inputs: callable = None     # (inputs) -> generate()'s inputs where they differ from forward's


def build_seeded(make, seed=0):
    torch.manual_seed(seed)
    return make().eval()


def to_device(inputs, device, dtype=None):
    out = {}
    for k, v in inputs.items():
        if torch.is_tensor(v):
            v = v.to(device)
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def max_abs_diff(a, b, valid=None):
    a, b = a.float(), b.float()
    if a.shape != b.shape:
        raise AssertionError(f"shape differs: ours {tuple(a.shape)} vs reference {tuple(b.shape)}")
    if valid is not None and a.dim() >= 2 and tuple(valid.shape) == tuple(a.shape[:2]):
        a, b = a[valid], b[valid]
    return (a - b).abs().max().item() if a.numel() else 0.0


def convert_reference(reference, folder, dtype=torch.float32, device="cpu"):
    """save_pretrained then load_pretrained: the round trip a real checkpoint takes."""
    import weights_convert
    reference.save_pretrained(folder)
    return weights_convert.load_pretrained(folder, dtype=dtype, device=device)


@torch.no_grad()
def compare_models(ours, reference, inputs, fields, valid=None):
    """{field: max |diff|} between our outputs and the reference's on the same inputs."""
    mine, ref = ours(**inputs), reference(**inputs)
    diffs = {}
    for name in fields:
        a, b = mine[name], getattr(ref, name)
        if a is None or b is None:
            raise AssertionError(f"field {name!r}: ours is {type(a).__name__}, reference is {type(b).__name__}")
        diffs[name] = max_abs_diff(a, b, valid)
    return diffs


@torch.no_grad()
def compare_generate(ours, reference, inputs, **gen_kwargs):
    """Greedy generate on both; returns (ours ids, reference ids)."""
    kwargs = dict(do_sample=False, **gen_kwargs)
    ref_ids = reference.generate(**inputs, **kwargs)
    our_ids = ours.generate(**inputs, **gen_kwargs)
    return our_ids, ref_ids


def run_case(case, device="cpu", dtype=torch.float32, seed=0):
    """Returns {"diffs": {field: max |diff|}, "generate_equal": bool | None}."""
    reference = build_seeded(case.build_reference, seed)
    generator = torch.Generator().manual_seed(seed)
    inputs = case.make_inputs(reference, generator)
    if case.folder:
        import weights_convert
        ours = weights_convert.load_pretrained(case.folder, dtype=dtype, device=device)
    else:
        with tempfile.TemporaryDirectory() as folder:
            ours = convert_reference(reference, folder, dtype=dtype, device=device)
    reference = reference.to(device=device, dtype=dtype)
    inputs = to_device(inputs, device, dtype)
    valid = case.valid_positions(inputs) if case.valid_positions else None
    result = {"diffs": compare_models(ours, reference, inputs, case.fields, valid), "generate_equal": None}
    if case.generate is not None:
        gen_inputs = case.generate_inputs(inputs) if case.generate_inputs else inputs
        our_ids, ref_ids = compare_generate(ours, reference, gen_inputs, **case.generate)
        result["generate_equal"] = our_ids.shape == ref_ids.shape and bool((our_ids == ref_ids).all())
    return result


def check_case(case, device="cpu", dtype=torch.float32, tolerance=FP32_TOLERANCE):
    """Run a case and judge it: rows of (case, field, max |diff| or "equal"/"differ", ok)."""
    result = run_case(case, device=device, dtype=dtype)
    missing = set(case.fields) - set(result["diffs"])
    if missing:
        raise AssertionError(f"{case.name}: fields not compared: {sorted(missing)}")
    rows = [(case.name, name, diff, diff <= tolerance) for name, diff in result["diffs"].items()]
    if result["generate_equal"] is not None:
        equal = result["generate_equal"]
        rows.append((case.name, "greedy ids", "equal" if equal else "differ", equal))
    return rows


def assert_parity(case, **kwargs):
    """check_case, failing with every field that is over budget or every greedy-id mismatch."""
    bad = [f"{field} {diff if isinstance(diff, str) else f'{diff:.2e}'}"
           for _, field, diff, ok in check_case(case, **kwargs) if not ok]
    assert not bad, f"{case.name}: " + ", ".join(bad)


def format_table(rows):
    """rows: (case, field, max |diff|, ok) -> an aligned text table."""
    header = ("case", "field", "max |diff|", "")
    lines = [header] + [(c, f, f"{d:.2e}" if isinstance(d, float) else str(d), "ok" if ok else "FAIL")
                        for c, f, d, ok in rows]
    widths = [max(len(str(r[i])) for r in lines) for i in range(4)]
    return "\n".join("  ".join(str(r[i]).ljust(widths[i]) for i in range(4)).rstrip() for r in lines)
