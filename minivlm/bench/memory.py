"""Peak host memory of generation, minivlm against transformers (issue 12's target: "generation's peak
memory <= transformers' for the same prompt and length"), measured on the CPU.

    python -m minivlm bench --memory [--workloads decode ...] [--toy]
    from minivlm.bench.memory import run_memory_bench, format_memory_table

torch keeps no allocation counter on the CPU (torch.cuda.max_memory_allocated has no CPU twin), so
this measures what the operating system sees: resident pages. Done naively that lies in two ways,
and each is closed here:

* one process for both implementations lets the second reuse pages the first freed (glibc keeps
  freed heap memory mapped), so its peak hides. Each implementation runs in a FRESH subprocess
  (`python -m minivlm.bench.memory --child SPEC`), one at a time, loading the same saved folder.
* transformers maps the safetensors file (as minivlm's loader does with mmap=True), so its weights
  become resident only when the first forward reads them: "memory during generate" would count the
  weights. The child reads every weight once (`touch`) before the baseline is taken.

Then, around each generate call: free what Python and glibc still hold (gc, malloc_trim), read
VmRSS (the baseline: imports + the loaded, resident model), reset the kernel's high-water mark
(writing 5 to /proc/self/clear_refs sets VmHWM back to the current RSS, Linux >= 4.0), call
generate, read VmHWM. "above model" is VmHWM - baseline: everything generation itself held at its
peak (KV cache, activations, logits, workspaces, and what the allocator kept or fragmented).
Generate runs twice: the first call also pays one-time costs (library code paged in, lazily built
tables and caches), the second shows the steady state. "process peak" is the child's VmHWM over its
whole life (imports, load and generation).

A third call runs under torch's profiler with profile_memory: summing its allocation and free
events in time order gives the peak of torch tensors alive at once ("tensors"), exact and
allocator-independent — the number to explain a difference with (which tensors, which phase);
RSS is what the machine pays. tests/test_bench_memory.py checks both on a child that holds a known
200 MiB.
"""
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from statistics import median

import torch

from .speed import SMOLLM, TINYLLAMA, TOY_LLAMA, minivlm_greedy, transformers_greedy

MB = 2 ** 20
# workload -> (Llama shape, dtype, prompt tokens, new tokens). The first two are speed.py's decode
# workloads; decode_long makes the KV cache count (it grows with prompt + new tokens).
CASES = {"decode": (SMOLLM, "float32", 128, 64),
         "decode_1b": (TINYLLAMA, "bfloat16", 64, 32),
         "decode_long": (SMOLLM, "float32", 512, 256)}
TOY_CASES = {"decode": (TOY_LLAMA, "float32", 16, 8), "decode_long": (TOY_LLAMA, "float32", 64, 32)}
IMPLS = ("transformers", "minivlm", "minivlm growing cache")


def memory_status():
    """{'VmRSS': MB, 'VmHWM': MB} of this process, from /proc/self/status (kB there)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    return out


def reset_peak():
    """Set VmHWM back to the current RSS (Linux: proc(5), /proc/pid/clear_refs, value 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def release_free_memory():
    """Return what Python's garbage and glibc's free lists still hold to the OS, so the baseline is
    what is really in use (malloc_trim is glibc's; elsewhere this only collects)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_around(fn):
    """(fn's output, baseline RSS MB, peak RSS MB during fn)."""
    release_free_memory()
    base = memory_status()["VmRSS"]
    reset_peak()
    out = fn()
    return out, base, memory_status()["VmHWM"]


def tensor_peak(fn):
    """(fn's output, peak MB of torch tensors alive at once during fn, above those alive before it):
    the allocator-independent count, from the profiler's allocation events (each alloc and free,
    in time order). RSS also sees what glibc keeps and fragments; this sees what torch asked for."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    live = peak = 0
    events = prof.profiler.kineto_results.events()
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in events
                            if e.name() == "[memory]" and str(e.device_type()) == "DeviceType.CPU"):
        live += nbytes
        peak = max(peak, live)
    return out, peak / MB


def touch(model):
    """Read every parameter and buffer once, so mapped weights (transformers') are resident before the baseline."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.numel():
                t.reshape(-1)[:: max(1, 4096 // t.element_size())].sum()  # one element per 4 KiB page


def load(impl, folder, dtype):
    if impl == "transformers":
        import transformers
        transformers.utils.logging.set_verbosity_error()
        return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    import weights_convert
    return weights_convert.load_pretrained(folder, dtype=dtype)


def generate_fn(impl, model, ids, new_tokens):
    """The generate call speed.py times, for the one model this child loaded."""
    mask = torch.ones_like(ids)
    if impl == "transformers":
        return transformers_greedy(model, ids, mask, new_tokens)
    return minivlm_greedy(model, ids, mask, new_tokens, static_cache=impl == "minivlm")


def calibration_fn(spec):
    """The instrument's own check: a "generate" that holds spec['calibrate_mb'] MiB at once, as one
    tensor (a fresh mmap) or, with spec['pieces'], as 64 KiB tensors from glibc's heap, then frees it."""
    nbytes = spec["calibrate_mb"] * MB

    def fn():
        if spec.get("pieces"):
            held = [torch.ones(16 * 1024) for _ in range(nbytes // (64 * 1024))]
        else:
            held = torch.ones(nbytes // 4)
        del held
        return torch.zeros(1, 1, dtype=torch.long)
    return fn


def child(spec):
    """Runs in the fresh subprocess: load, touch, generate twice (RSS), once more profiled (tensors).
    Returns a JSON-able dict."""
    torch.set_num_threads(spec.get("threads", 1))
    imported = memory_status()["VmRSS"]
    if "calibrate_mb" in spec:
        fn, model = calibration_fn(spec), None
    else:
        dtype = getattr(torch, spec["dtype"])
        start = time.perf_counter()
        model = load(spec["impl"], spec["folder"], dtype)
        touch(model)
        load_seconds = time.perf_counter() - start
        ids = torch.randint(0, model.config.vocab_size, (spec["batch"], spec["prompt"]),
                            generator=torch.Generator().manual_seed(0))
        fn = generate_fn(spec["impl"], model, ids, spec["new"])
    load_peak = memory_status()["VmHWM"]
    runs = []
    with torch.no_grad():
        for _ in range(spec.get("calls", 2)):
            out, base, peak = peak_around(fn)
            runs.append({"base": base, "peak": peak})
        out, tensors = tensor_peak(fn)  # last: the profiler's own memory would blur the RSS calls
    result = {"imported_MB": imported, "load_peak_MB": load_peak, "runs": runs,
              "process_peak_MB": max([load_peak] + [r["peak"] for r in runs]),
              "tensors_MB": tensors,
              "new_ids": out[:, -spec.get("new", 0):].tolist() if spec.get("new") else []}
    if model is not None:
        result["load_seconds"] = load_seconds
    return result


def run_child(spec, timeout=1800):
    """One measurement in a fresh Python process (this file's __main__), one at a time."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "minivlm.bench.memory", "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {spec.get('impl', 'calibrate')} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def save_reference(shape, dtype, folder):
    """The transformers Llama from `shape`, seeded, built directly in `dtype`, saved to `folder`."""
    import transformers
    from .speed import default_dtype
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**shape, attn_implementation="sdpa")
    with default_dtype(dtype):
        model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / MB  # tied matrix counted once
    del model
    gc.collect()
    return weights


def run_memory_bench(workloads=None, impls=IMPLS, toy=False, batch=1, prompt_len=None, new_tokens=None, repeats=1,
                     log=print):
    """One row per (workload, impl): weights_MB, model_MB (the process with the model resident),
    first_MB / steady_MB (RSS peak above that during the first / a later generate call), tensors_MB
    (peak of torch tensors alive during a generate call, from the profiler), process_peak_MB, ids_equal
    (greedy ids equal to transformers'). Each figure is the median over `repeats` fresh children:
    RSS above the model moves by a few MB from run to run (the allocator), the tensor count does not."""
    cases = TOY_CASES if toy else CASES
    rows = []
    for workload in workloads or list(cases):
        if workload not in cases:
            raise ValueError(f"memory workloads are {', '.join(cases)}{' (with --toy)' if toy else ''}; "
                             f"got {workload!r}")
        shape, dtype, prompt, new = cases[workload]
        prompt, new = prompt_len or prompt, new_tokens or new
        with tempfile.TemporaryDirectory() as folder:
            weights = save_reference(shape, getattr(torch, dtype), folder)
            reference_ids = None
            for impl in impls:
                spec = {"impl": impl, "folder": folder, "dtype": dtype, "batch": batch, "prompt": prompt, "new": new}
                runs = [run_child(spec) for _ in range(repeats)]
                if impl == "transformers":
                    reference_ids = runs[0]["new_ids"]
                r = {"workload": workload, "dtype": dtype, "impl": impl, "prompt": prompt, "new": new, "batch": batch,
                     "weights_MB": weights, "model_MB": median([c["runs"][0]["base"] for c in runs]),
                     "first_MB": median([c["runs"][0]["peak"] - c["runs"][0]["base"] for c in runs]),
                     "steady_MB": median([x["peak"] - x["base"] for c in runs for x in c["runs"][1:]]),
                     "tensors_MB": median([c["tensors_MB"] for c in runs]),
                     "process_peak_MB": median([c["process_peak_MB"] for c in runs]),
                     "ids_equal": None if reference_ids is None else all(c["new_ids"] == reference_ids for c in runs)}
                rows.append(r)
                log(f"  {workload} {impl}: generate peak +{r['steady_MB']:.1f} MB RSS "
                    f"(first call +{r['first_MB']:.1f}), "
                    f"tensors {r['tensors_MB']:.1f} MB, over a {r['model_MB']:.0f} MB process; process peak "
                    f"{r['process_peak_MB']:.0f} MB")
    return rows


def format_memory_table(rows):
    lines = ["| workload | dtype | prompt + new | implementation | generate: RSS peak above model, later calls (1st) "
             "| torch tensors peak | vs transformers (RSS, tensors) | process peak | ids equal |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = {r["workload"]: r for r in rows if r["impl"] == "transformers"}
    for r in rows:
        ref = base.get(r["workload"])
        ratio = "" if ref is None else (f"{r['steady_MB'] / max(ref['steady_MB'], 1e-9):.2f}x, "
                                        f"{r['tensors_MB'] / max(ref['tensors_MB'], 1e-9):.2f}x")
        equal = "" if r["ids_equal"] is None else ("yes" if r["ids_equal"] else "no")
        lines.append(f"| {r['workload']} | {r['dtype']} | {r['prompt']} + {r['new']} | {r['impl']} | "
                     f"{r['steady_MB']:.1f} MB ({r['first_MB']:.1f}) | {r['tensors_MB']:.1f} MB | {ratio} | "
                     f"{r['process_peak_MB']:.0f} MB | {equal} |")
    lines.append("")
    lines.append("MB = MiB. Each implementation in a fresh process, 1 thread, the model loaded and resident first; "
                 "RSS from VmHWM (medians over the repeats), tensors from the profiler's allocation events "
                 "(minivlm/bench/memory.py)")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--child":
        sys.exit("usage: python -m minivlm.bench.memory --child SPEC_JSON (run_memory_bench starts these)")
    print(json.dumps(child(json.loads(sys.argv[2]))))
