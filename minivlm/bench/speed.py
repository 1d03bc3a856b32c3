"""Speed side by side with transformers, and against this machine's own limits, in one run.

Workloads (random seeded weights from configs; nothing downloaded). Each builds the transformers
model, saves it, loads the same weights into minivlm through weights_convert, then times both
*interleaved* (ours, theirs, ours, theirs ...) so load from other processes hits both alike:

    vision      CLIP ViT-B/16 vision tower forward, batch 8 at 224 px            (ms, lower is better)
    prefill     LLaVA prefill: ViT-B/14 @336 + a SmolLM-135M-shaped Llama, ~617 tokens (ms)
    decode      greedy decode, SmolLM-135M shape, 128-token prompt, 64 new tokens (tokens/s)
    decode_1b   greedy decode, a 1.1B Llama (TinyLlama shape) in bf16, 64 + 32     (tokens/s)

The limits come from probes run in the same process: a matrix-vector product (memory bandwidth:
decode reads every weight once per token, so tok/s <= bandwidth / weight bytes) and a square matmul
(compute: vision and prefill are matmul-bound). "of limit" is the achieved fraction.
Decode rows: minivlm's default generate (static KV cache), + fused projections, + int8 weights,
+ a compiled decode step and int8 weights under it (--compile); ids are checked against transformers' greedy ids.
"""
import contextlib
import copy
import statistics
import tempfile
import time

import torch

from ..fast import CompiledDecoder, fuse_projections, quantize_int8
from ..fast.cpu import cpu_info, cpu_summary, matvec_route_ok
from ..generation import generate
from ..processing.anyres import tokens_per_image

SMOLLM = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
              num_key_value_heads=3, tie_word_embeddings=True)
TINYLLAMA = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                 num_attention_heads=32, num_key_value_heads=4, tie_word_embeddings=False)
VIT_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224,
               patch_size=16)
TOY_LLAMA = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True)
TOY_VIT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32,
               patch_size=8)
WORKLOADS = ("vision", "prefill", "decode", "decode_1b")


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# perf_counter: wall-clock. time.thread_time (--cpu-time, one CPU thread only): the CPU time of the
# one thread that does all the work, which leaves out the time other processes held the core — on a
# shared machine the only clock whose ratios hold still (cache contention still shows).
CLOCK = {"now": time.perf_counter}


def timed(fn, device):
    sync(device)
    start = CLOCK["now"]()
    out = fn()
    sync(device)
    return CLOCK["now"]() - start, out


@contextlib.contextmanager
def default_dtype(dtype):
    """Build models directly in `dtype` (a 1.1B model is not materialised in fp32 first)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def probes(device, toy=False):
    """Measured limits: matrix-vector GB/s and matmul FLOP/s, in fp32 and bf16 (best of a few)."""
    gpu = torch.device(device).type == "cuda"
    n_mv, n_mm = (256, 128) if toy else ((16384, 8192) if gpu else (8192, 2048))
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.randn(n_mv, n_mv // 2, device=device, dtype=dtype)
        x = torch.randn(1, n_mv // 2, device=device, dtype=dtype)
        a = torch.randn(n_mm, n_mm, device=device, dtype=dtype)
        mv = min(timed(lambda: torch.nn.functional.linear(x, w), device)[0] for _ in range(8))
        mm = min(timed(lambda: a @ a, device)[0] for _ in range(4))
        name = str(dtype).replace("torch.", "")
        out[name] = {"matvec_GBps": w.numel() * w.element_size() / mv / 1e9, "matmul_GFLOPs": 2 * n_mm ** 3 / mm / 1e9}
        del w, x, a
    return out


def reference_and_ours(make_reference, dtype, device):
    """Build the transformers model (seeded, directly in `dtype`), save it, and load both back on
    `device` as users load them: transformers' from_pretrained(dtype=...) keeps RoPE's inv_freq in
    fp32 (as ours does), where .to(bfloat16) would round it. make_reference is a function so the
    first copy is freed before the reload (a 1.1B model is 2.2 GB in bf16)."""
    import weights_convert
    torch.manual_seed(0)
    with default_dtype(dtype):
        reference = make_reference().eval()
    cls = type(reference)
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        if dtype == torch.float32:
            reference = reference.to(device)
        else:
            del reference
            reference = cls.from_pretrained(folder, dtype=dtype).to(device).eval()
        with default_dtype(dtype):
            ours = weights_convert.load_pretrained(folder, dtype=dtype, device=device)
    return reference, ours


def weight_bytes(model):
    """Bytes of the matrices one decode step reads: every distinct (tied ones once) parameter and buffer
    of two or more dims, but an embedding table only where it is also the output head (tied): a step
    looks up one row of it, so an untied table, or the float one an int8 head was copied from, is not read."""
    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            continue
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if t.dim() > 1 and t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total


def matmul_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_memory(fn, device):
    """(output, bytes allocated above what was already held at the call's peak) on CUDA; None on CPU,
    where torch keeps no such count."""
    if torch.device(device).type != "cuda":
        return fn(), None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    return out, torch.cuda.max_memory_allocated() - base


def interleave(fns, repeats, device, memory=None):
    """{name: fn} -> {name: [seconds ...]} timed round-robin, after one warm-up call each (whose peak
    memory goes into `memory` when given)."""
    outs = {}
    for name, fn in fns.items():  # warm-up, and the outputs to compare
        outs[name], peak = peak_memory(fn, device)
        if memory is not None:
            memory[name] = peak
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device)[0])
    return times, outs


def row(workload, name, seconds, unit, work, rate, equal=None, note=""):
    """unit 'ms' (lower is better) or 'tok/s' (work = tokens); rate(seconds) = (achieved bytes/s or
    FLOP/s, "bandwidth" or "compute"): set against the machine's limits at the end of the run.
    The value is the best run: other load on the machine only ever slows a run down (timeit's rule);
    the median and the spread (worst, best) show how noisy the machine was."""
    best, med = min(seconds), statistics.median(seconds)
    show = (lambda t: t * 1e3) if unit == "ms" else (lambda t: work / t)
    return {"workload": workload, "impl": name, "value": show(best), "median": show(med), "unit": unit,
            "spread": (show(max(seconds)), show(best)), "rate": rate(best), "of_limit": None,
            "equal": equal, "note": note}


def bench_forward(workload, build, inputs, dtype, device, repeats):
    reference, ours = build()
    fused = fuse_projections(copy.deepcopy(ours))
    fns = {"transformers": lambda: reference(**inputs), "minivlm": lambda: ours(**inputs),
           "minivlm fused": lambda: fused(**inputs)}
    with torch.no_grad():
        flops = matmul_flops(fns["minivlm"])
        times, outs = interleave(fns, repeats, device)
    field = "logits" if "logits" in outs["transformers"] else "last_hidden_state"
    ref = outs["transformers"][field].float()
    rows = []
    for name in fns:
        diff = (outs[name][field].float() - ref).abs().max().item()
        rows.append(row(workload, name, times[name], "ms", None, lambda s: (flops / s, "compute"),
                        note=f"max abs diff {field} {diff:.1e}; {flops / 1e9:.2f} GFLOP"))
    return rows


def matvecs_alone(model, batch, new_tokens, device):
    """The decode steps' matrix products and nothing else: every linear layer of `model` (fused: the
    fewest, largest calls) applied to one token, new_tokens times, through the same kernels the model
    uses. No implementation built on these kernels decodes faster: the gap between this row and a
    decode row is everything else a step does (norms, rotary, attention, the KV cache, Python)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = [torch.randn(batch, 1, m.in_features, dtype=m.weight.dtype, device=device) for m in linears]

    def run():
        for _ in range(new_tokens):
            for m, x in zip(linears, xs):
                m(x)
    return run


def matvec_routes(model):
    """'; torch.mv for 3 of 7 shapes': how many distinct one-row linear shapes of `model` this CPU's
    probe (fast/cpu.py) sends to torch.mv instead of F.linear."""
    shapes = {(m.weight.dtype, *m.weight.shape, m.bias is not None): m for m in model.modules()
              if isinstance(m, torch.nn.Linear)}
    routed = sum(matvec_route_ok(m.weight.dtype, m.weight, m.bias) for m in shapes.values())
    return f"; torch.mv for {routed} of {len(shapes)} shapes"


def transformers_greedy(model, ids, mask, new_tokens):
    """transformers' generate of exactly new_tokens greedy tokens (no eos stop), as every decode bench times it."""
    return lambda: model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)


def minivlm_greedy(model, ids, mask, new_tokens, **kwargs):
    """Ours, the same call (kwargs: static_cache=...)."""
    return lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, eos_token_id=None,
                                  **kwargs)


def bench_decode(workload, reference, ours, prompt_len, new_tokens, batch, device, repeats, compile):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, reference.config.vocab_size, (batch, prompt_len), generator=gen).to(device)
    mask = torch.ones_like(ids)
    mine = lambda model: minivlm_greedy(model, ids, mask, new_tokens)
    variants = {"transformers": (transformers_greedy(reference, ids, mask, new_tokens), weight_bytes(reference)),
                "minivlm": (mine(ours), weight_bytes(ours))}
    fused = fuse_projections(copy.deepcopy(ours))
    variants["minivlm fused"] = (mine(fused), weight_bytes(fused))
    variants["matvecs alone (floor)"] = (matvecs_alone(fused, batch, new_tokens, device), weight_bytes(fused))
    int8 = quantize_int8(copy.deepcopy(ours))
    variants["minivlm int8"] = (mine(int8), weight_bytes(int8))
    compile_note = ""
    if compile:
        decoder = CompiledDecoder(fused)
        step = lambda: generate(decoder, input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens)
        variants["minivlm fused+compiled"] = (step, weight_bytes(fused))
        int8_decoder = CompiledDecoder(quantize_int8(copy.deepcopy(fused)))
        int8_step = lambda: generate(int8_decoder, input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens)
        variants["minivlm int8+compiled"] = (int8_step, weight_bytes(int8_decoder.model))
    with torch.no_grad():
        memory = {}
        times, outs = interleave({name: fn for name, (fn, _) in variants.items()}, repeats, device, memory)
    if compile:
        compile_note = (f"; compile {decoder.compile_seconds:.1f}s / int8 {int8_decoder.compile_seconds:.1f}s "
                        "(not in tok/s)")
    ref = outs["transformers"]
    route = matvec_routes(ours) if device == "cpu" and batch == 1 else ""
    rows = []
    for name, (_, nbytes) in variants.items():
        agree = None
        if outs[name] is not None:  # the floor row makes no tokens
            agree = (outs[name][:, prompt_len:] == ref[:, prompt_len:]).float().mean().item()
        rows.append(row(workload, name, times[name], "tok/s", batch * new_tokens,
                        lambda s, b=nbytes: (b * new_tokens / s, "bandwidth"),
                        equal=None if agree is None else bool(agree == 1.0),
                        note=f"{nbytes / 1e6:.1f} MB weights"
                        + ("; the linear layers only, no tokens" if agree is None else f"; ids agree {agree:.0%}")
                        + (compile_note if "compiled" in name else "")
                        + (route if name in ("minivlm", "minivlm fused") else "")
                        + ("" if memory[name] is None else f"; peak +{memory[name] / 2**20:.0f} MiB")))
    return rows


def run_bench(workloads=WORKLOADS, dtype=None, device="cpu", batch_size=None, prompt_len=None, new_tokens=None,
              repeats=3, compile=False, toy=False, log=print):
    """Returns {"limits": probes, "rows": [...]} for the chosen workloads. dtype None: each workload's
    own (fp32, but bf16 for decode_1b)."""
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    machine = cpu_info() if device == "cpu" else {"model": device}
    log(f"cpu: {cpu_summary()}" if device == "cpu" else f"device: {device}")
    limits = probes(device, toy)
    log(f"limits: {limits}")
    rows = []
    for workload in workloads:
        torch.manual_seed(0)
        wdtype = dtype or (torch.bfloat16 if workload == "decode_1b" else torch.float32)
        start = time.perf_counter()
        if workload == "vision":
            vit = TOY_VIT if toy else VIT_B16
            ref = lambda: transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**vit, attn_implementation="sdpa"))
            b = batch_size or 8
            px = torch.randn(b, 3, vit["image_size"], vit["image_size"], device=device, dtype=wdtype)
            rows += bench_forward(workload, lambda: reference_and_ours(ref, wdtype, device), {"pixel_values": px},
                                  wdtype, device, repeats)
        elif workload == "prefill":
            vit = dict(TOY_VIT, image_size=28, patch_size=7) if toy else dict(VIT_B16, image_size=336, patch_size=14)
            text = TOY_LLAMA if toy else SMOLLM
            image_token = text["vocab_size"] - 1
            cfg = transformers.LlavaConfig(vision_config=transformers.CLIPVisionConfig(**vit),
                                           text_config=transformers.LlamaConfig(**text), image_token_index=image_token,
                                           # the count the model and processor share (CLIP tower, 'default')
                                           image_seq_length=tokens_per_image(
                                               (vit["image_size"] // vit["patch_size"]) ** 2, True, "default"),
                                           attn_implementation="sdpa")
            ref = lambda: transformers.LlavaForConditionalGeneration(cfg)
            b, n_img = batch_size or 1, cfg.image_seq_length
            g = torch.Generator().manual_seed(1)
            ids = torch.cat([torch.randint(0, image_token, (b, 20), generator=g), torch.full((b, n_img), image_token),
                             torch.randint(0, image_token, (b, 21), generator=g)], dim=1).to(device)
            px = torch.randn(b, 3, vit["image_size"], vit["image_size"], device=device, dtype=wdtype)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": px, "logits_to_keep": 1}
            rows += bench_forward(workload, lambda: reference_and_ours(ref, wdtype, device), inputs, wdtype, device,
                                  repeats)
        else:
            shape = TOY_LLAMA if toy else (TINYLLAMA if workload == "decode_1b" else SMOLLM)
            config = transformers.LlamaConfig(**shape, attn_implementation="sdpa")
            reference, ours = reference_and_ours(lambda: transformers.LlamaForCausalLM(config), wdtype, device)
            prompt = prompt_len or (64 if workload == "decode_1b" else 128)
            new = new_tokens or (32 if workload == "decode_1b" else 64)
            rows += bench_decode(workload, reference, ours, prompt, new, batch_size or 1, device, repeats, compile)
            del reference, ours
        for r in rows:
            r.setdefault("dtype", str(wdtype).replace("torch.", ""))
        log(f"{workload}: {time.perf_counter() - start:.0f}s")
        for r in rows:
            if r["workload"] == workload:
                log(f"  {r['impl']}: best {r['value']:.1f} {r['unit']}, median {r['median']:.1f}, worst {r['spread'][0]:.1f}; {r['note']}")
    # The probes again at the end, the better of the two kept: other load only ever lowers them.
    # Bandwidth is bytes per second whatever their dtype: the best matrix-vector probe bounds decode;
    # compute is per dtype (bf16 runs on AMX tiles on this CPU, fp32 does not).
    end = probes(device, toy)
    for name in limits:
        for key in limits[name]:
            limits[name][key] = max(limits[name][key], end[name][key])
    bandwidth = max(v["matvec_GBps"] for v in limits.values()) * 1e9
    for r in rows:
        achieved, kind = r.pop("rate")
        r["of_limit"] = achieved / (bandwidth if kind == "bandwidth" else
                                    limits[r["dtype"]]["matmul_GFLOPs"] * 1e9)
    return {"limits": limits, "rows": rows, "device": device, "cpu": machine, "torch": torch.__version__,
            "clock": "thread CPU time" if CLOCK["now"] is time.thread_time else "wall-clock",
            "transformers": transformers.__version__, "threads": torch.get_num_threads()}


def format_table(result):
    lines = ["| workload | dtype | implementation | best | median (worst) | vs transformers | of limit | ids equal | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = {r["workload"]: r["value"] for r in result["rows"] if r["impl"] == "transformers"}
    for r in result["rows"]:
        b = base[r["workload"]]
        ratio = b / r["value"] if r["unit"] == "ms" else r["value"] / b  # > 1: faster than transformers
        of_limit = "" if r["of_limit"] is None else f"{r['of_limit']:.0%}"
        equal = "" if r["equal"] is None else ("yes" if r["equal"] else "no")
        lines.append(f"| {r['workload']} | {r['dtype']} | {r['impl']} | {r['value']:.1f} {r['unit']} | "
                     f"{r['median']:.1f} ({r['spread'][0]:.1f}) | {ratio:.2f}x | {of_limit} | {equal} | {r['note']} |")
    lim = result["limits"]
    lines.append("")
    cpu = result.get("cpu") or {}
    if "isa" in cpu:
        lines.append(f"cpu: {cpu['model']} ({cpu['isa']}; ATen {cpu['torch_cpu_capability']})")
    lines.append("limits: " + "; ".join(f"{k} matvec {v['matvec_GBps']:.1f} GB/s, matmul {v['matmul_GFLOPs']:.0f} GFLOP/s"
                                         for k, v in lim.items())
                 + f" ({result['device']}, {result['threads']} threads, {result.get('clock', 'wall-clock')}, torch {result['torch']}, "
                   f"transformers {result['transformers']})")
    return "\n".join(lines)
