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
# bf16 / fp16: bf16 keeps about 3 significant digits and the error grows through the layers, so each
# field is judged relative to the reference's scale, max|ours - ref| <= tol * (max|ref| + 1), and the
# arg-max token of any logits must agree at >= 99% of compared positions (DESIGN.md).
LOW_PRECISION_TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2}
TOP1_AGREEMENT = 0.99


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
    run: callable = None                 # (case, device, dtype, seed) -> run_case's result, where the case
                                         # runs its own way (a checkpoint on disk: parity/checkpoint.py)


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


def _compared(a, b, valid=None):
    """Both tensors in fp32, restricted to the valid (B, L) positions where the shape has them."""
    a, b = a.float(), b.float()
    if a.shape != b.shape:
        raise AssertionError(f"shape differs: ours {tuple(a.shape)} vs reference {tuple(b.shape)}")
    if valid is not None and a.dim() >= 2 and tuple(valid.shape) == tuple(a.shape[:2]):
        a, b = a[valid], b[valid]
    return a, b


def max_abs_diff(a, b, valid=None):
    a, b = _compared(a, b, valid)
    return (a - b).abs().max().item() if a.numel() else 0.0


def relative_diff(a, b, valid=None):
    """max |a - b| / (max |b| + 1): the low-precision measure, blind to the field's scale."""
    a, b = _compared(a, b, valid)
    return (a - b).abs().max().item() / (b.abs().max().item() + 1.0) if a.numel() else 0.0


def top1_agreement(a, b, valid=None):
    """Share of positions where our arg-max over the last axis is a reference arg-max, up to
    rounding: a pick whose reference logit is within two units of the dtype's precision
    (2 * eps * |max|: each model rounds once) of the reference's max counts. Measured on tiny
    BLIP decoders in bf16: top logits tied after rounding, or a three-way near-tie spread over
    1% in fp32 that bf16 reorders; either pick is then right."""
    slack = 2 * torch.finfo(b.dtype).eps if b.is_floating_point() else 0.0
    a, b = _compared(a, b, valid)
    if not a.numel():
        return 1.0
    best = b.amax(-1)
    ours_pick = b.gather(-1, a.argmax(-1, keepdim=True)).squeeze(-1)
    return (ours_pick >= best - slack * best.abs()).float().mean().item()


def convert_reference(reference, folder=None, dtype=torch.float32, device="cpu"):
    """save_pretrained then load_pretrained: the round trip a real checkpoint takes (through a
    temporary folder when none is given)."""
    import weights_convert
    if folder is None:
        with tempfile.TemporaryDirectory() as scratch:
            return convert_reference(reference, scratch, dtype, device)
    reference.save_pretrained(folder)
    return weights_convert.load_pretrained(folder, dtype=dtype, device=device)


def reload_reference(reference, folder, dtype, device):
    """The reference in `dtype` as users load it, from_pretrained(dtype=...): buffers such as RoPE's
    inv_freq stay fp32 there (and in ours), where reference.to(bfloat16) would round them."""
    if dtype == torch.float32:
        return reference.to(device)
    return type(reference).from_pretrained(folder, dtype=dtype).to(device).eval()


def output_fields(output, fields):
    """{field: tensor} of a model's output, whichever way it is accessed (ours: out[name]; HF's: out.name)."""
    got = {name: output[name] if isinstance(output, dict) else getattr(output, name, None) for name in fields}
    return got


def compare_outputs(mine, ref, fields, valid=None, measure=max_abs_diff):
    """{field: measure(ours, reference)} of two outputs; with relative_diff, also {"<field> top-1": agreement}
    for every logits field."""
    mine, ref = output_fields(mine, fields), output_fields(ref, fields)
    diffs = {}
    for name in fields:
        a, b = mine[name], ref[name]
        if a is None or b is None:
            raise AssertionError(f"field {name!r}: ours is {type(a).__name__}, reference is {type(b).__name__}")
        diffs[name] = measure(a, b, valid)
        if measure is relative_diff and name.startswith("logits") and a.dim() >= 2:
            diffs[f"{name} top-1"] = top1_agreement(a, b, valid)
    return diffs


@torch.no_grad()
def compare_models(ours, reference, inputs, fields, valid=None, measure=max_abs_diff):
    """compare_outputs of both models on the same inputs."""
    return compare_outputs(ours(**inputs), reference(**inputs), fields, valid, measure)


@torch.no_grad()
def compare_generate(ours, reference, inputs, **gen_kwargs):
    """Greedy generate on both; returns (ours ids, reference ids)."""
    kwargs = dict(do_sample=False, **gen_kwargs)
    ref_ids = reference.generate(**inputs, **kwargs)
    our_ids = ours.generate(**inputs, **gen_kwargs)
    return our_ids, ref_ids


def run_case(case, device="cpu", dtype=torch.float32, seed=0):
    """Returns {"diffs": {field: value}, "generate_equal": bool | None}. In fp32 a value is the
    max |diff|; in bf16/fp16 the relative_diff, plus top-1 agreement for logits, and no greedy
    comparison (DESIGN.md asks identical ids of fp32 only: in bf16 a near-tie may flip a token)."""
    if case.run is not None:  # e.g. a checkpoint on disk: one model at a time (parity/checkpoint.py)
        return case.run(case, device=device, dtype=dtype, seed=seed)
    reference = build_seeded(case.build_reference, seed)
    generator = torch.Generator().manual_seed(seed)
    inputs = case.make_inputs(reference, generator)
    with tempfile.TemporaryDirectory() as folder:
        ours = convert_reference(reference, folder, dtype=dtype, device=device)
        reference = reload_reference(reference, folder, dtype, device)
    inputs = to_device(inputs, device, dtype)
    valid = case.valid_positions(inputs) if case.valid_positions else None
    measure = max_abs_diff if dtype == torch.float32 else relative_diff
    result = {"diffs": compare_models(ours, reference, inputs, case.fields, valid, measure), "generate_equal": None}
    if case.generate is not None and dtype == torch.float32:
        gen_inputs = case.generate_inputs(inputs) if case.generate_inputs else inputs
        our_ids, ref_ids = compare_generate(ours, reference, gen_inputs, **case.generate)
        result["generate_equal"] = our_ids.shape == ref_ids.shape and bool((our_ids == ref_ids).all())
    return result


def default_tolerance(dtype):
    """DESIGN.md's budget for a dtype: absolute in fp32, relative to the reference's scale below it."""
    return FP32_TOLERANCE if dtype == torch.float32 else LOW_PRECISION_TOLERANCE[dtype]


def within_budget(field, value, tolerance):
    """A compared value passes: a "<field> top-1" agreement reaches TOP1_AGREEMENT, a diff stays <= tolerance."""
    return value >= TOP1_AGREEMENT if field.endswith(" top-1") else value <= tolerance


@torch.no_grad()
def assert_low_precision(reference, inputs, fields, device, dtype=torch.bfloat16, valid_positions=None,
                         tolerance=None, name=""):
    """One reference on the caller's own (larger) batch: converted and reloaded in `dtype`, every
    field within the relative tolerance, logits at >= TOP1_AGREEMENT top-1 agreement."""
    tolerance = tolerance or default_tolerance(dtype)
    with tempfile.TemporaryDirectory() as folder:
        ours = convert_reference(reference, folder, dtype=dtype, device=device)
        reference = reload_reference(reference, folder, dtype, device)
    inputs = to_device(inputs, device, dtype)
    valid = valid_positions(inputs) if valid_positions else None
    diffs = compare_models(ours, reference, inputs, fields, valid, measure=relative_diff)
    bad = {k: v for k, v in diffs.items() if not within_budget(k, v, tolerance)}
    assert not bad, f"{name} in {dtype}: " + ", ".join(f"{k} {v:.3g}" for k, v in bad.items())


def check_case(case, device="cpu", dtype=torch.float32, tolerance=None):
    """Run a case and judge it: rows of (case, field, value or "equal"/"differ", ok). The tolerance
    defaults to DESIGN.md's budget for the dtype; top-1 rows must reach TOP1_AGREEMENT."""
    tolerance = tolerance or default_tolerance(dtype)
    result = run_case(case, device=device, dtype=dtype)
    missing = set(case.fields) - set(result["diffs"])
    if missing:
        raise AssertionError(f"{case.name}: fields not compared: {sorted(missing)}")
    rows = [(case.name, name, diff, within_budget(name, diff, tolerance)) for name, diff in result["diffs"].items()]
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
    """rows: (case, field, value, ok) -> an aligned text table."""
    header = ("case", "field", "value", "")
    lines = [header] + [(c, f, f"{d:.2e}" if isinstance(d, float) else str(d), "ok" if ok else "FAIL")
                        for c, f, d, ok in rows]
    widths = [max(len(str(r[i])) for r in lines) for i in range(4)]
    return "\n".join("  ".join(str(r[i]).ljust(widths[i]) for i in range(4)).rstrip() for r in lines)
