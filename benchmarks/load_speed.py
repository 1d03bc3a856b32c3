"""Load speed and host memory: weights_convert.load_pretrained vs transformers' from_pretrained on the
same real-size checkpoint folder, each in a fresh process, then one forward each.

    python benchmarks/load_speed.py [--folder /tmp/llama-1b] [--repeats 2] [--keep] [--device cpu]

The folder: a 1.1B Llama (TinyLlama's shape: hidden 2048, 22 layers, 32 heads, 4 KV heads,
intermediate 5632, vocab 32000), random bf16 weights in 3 safetensors shards (2.2 GB), written one
tensor at a time from names and shapes taken from HF's model built on the meta device — the
model is never materialised, let alone in fp32. Each loader runs in its own subprocess (a fresh
allocator, nothing cached in Python) with dtype=bfloat16 — minivlm twice, reading the weights in (its
default) and with mmap=True: load time is the wall time of the load
call, peak host memory the child's VmHWM (peak resident pages, imports included). Both forwards
must give the same logits. A last run loads with device="meta": every tensor is read and copied off
the host as a GPU load does, so its peak host memory is what a GPU load costs the host. The folder
is deleted afterwards unless --keep.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TINYLLAMA = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                 num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5,
                 tie_word_embeddings=False, architectures=["LlamaForCausalLM"])


def make_folder(folder, shards=3, seed=0):
    """A sharded bf16 LlamaForCausalLM folder as save_pretrained writes it, one tensor in memory at a time
    (a shard's tensors while it is written)."""
    import transformers
    from safetensors.torch import save_file
    config = transformers.LlamaConfig(**TINYLLAMA)
    config.dtype = torch.bfloat16
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in transformers.LlamaForCausalLM(config).state_dict().items()}
    os.makedirs(folder, exist_ok=True)
    config.save_pretrained(folder)
    total = sum(torch.Size(s).numel() * 2 for s in shapes.values())
    generator = torch.Generator().manual_seed(seed)
    names, weight_map, shard, size, n = list(shapes), {}, {}, 0, 1

    def flush():
        nonlocal shard, size, n
        name = f"model-{n:05d}-of-{shards:05d}.safetensors"
        save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
        shard, size, n = {}, 0, n + 1

    for key in names:
        shape = shapes[key]
        if key.endswith("norm.weight"):
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
        shard[key], size = t, size + t.numel() * 2
        if size >= total / shards and n < shards:
            flush()
    flush()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return total


def peak_rss():
    """This process's peak resident memory in bytes (VmHWM: unlike ru_maxrss it does not carry over the
    parent's peak across fork + exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def child(loader, folder, device, logits_path):
    """One measurement in this (fresh) process: prints a JSON line."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if loader == "transformers":
        import transformers
        transformers.utils.logging.set_verbosity_error()
        placement = {} if device == "cpu" else {"device_map": device}
        load = lambda: transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, **placement)  # noqa: E731
    else:
        sys.path.insert(0, ROOT)
        import weights_convert
        load = lambda: weights_convert.load_pretrained(folder, dtype=torch.bfloat16, device=device,  # noqa: E731
                                                       mmap=loader == "minivlm-mmap")
    before = peak_rss()
    start = time.perf_counter()
    model = load()
    load_s = time.perf_counter() - start
    peak_load = peak_rss()
    if device == "meta":  # the copy path alone (what a GPU load does to the host): no forward
        print(json.dumps(dict(load_s=load_s, peak_load=peak_load, rss_imports=before)))
        return
    ids = torch.arange(1, 33)[None].to(device)  # (1, 32)
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float().cpu()
    forward_s = time.perf_counter() - start
    torch.save(logits, logits_path)
    peak_all = peak_rss()
    print(json.dumps(dict(load_s=load_s, forward_s=forward_s, rss_imports=before, peak_load=peak_load,
                          peak_all=peak_all)))


def measure(loader, folder, device, logits_path):
    out = subprocess.run([sys.executable, __file__, "--child", loader, "--folder", folder, "--device", device,
                          "--logits", logits_path], capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{loader} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default="/tmp/minivlm-load-speed-llama-1b")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2, help="runs per loader, alternating (best time, worst peak)")
    p.add_argument("--keep", action="store_true", help="keep the folder (reused by the next run)")
    p.add_argument("--child", choices=("transformers", "minivlm", "minivlm-mmap"), help=argparse.SUPPRESS)
    p.add_argument("--logits", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.folder, args.device, args.logits)

    if not os.path.exists(os.path.join(args.folder, "model.safetensors.index.json")):
        start = time.perf_counter()
        make_folder(args.folder)
        print(f"wrote {args.folder} in {time.perf_counter() - start:.1f}s")
    weights = sum(os.path.getsize(os.path.join(args.folder, f)) for f in os.listdir(args.folder)
                  if f.endswith(".safetensors"))
    runs = {"transformers": [], "minivlm": [], "minivlm-mmap": []}
    try:
        for _ in range(args.repeats):
            for loader in runs:  # alternating, so both see the same page cache
                runs[loader].append(measure(loader, args.folder, args.device, f"{args.folder}.{loader}.pt"))
        logits = {k: torch.load(f"{args.folder}.{k}.pt") for k in runs}
        if args.device == "cpu":  # every tensor read and copied to another device: host memory in flight
            copy_path = measure("minivlm", args.folder, "meta", os.devnull)
    finally:
        for k in runs:
            if os.path.exists(f"{args.folder}.{k}.pt"):
                os.remove(f"{args.folder}.{k}.pt")
        if not args.keep:
            shutil.rmtree(args.folder, ignore_errors=True)

    gb = 1e9
    best = {k: dict(load_s=min(r["load_s"] for r in v), forward_s=min(r["forward_s"] for r in v),
                    peak_load=max(r["peak_load"] for r in v), peak_all=max(r["peak_all"] for r in v),
                    rss_imports=max(r["rss_imports"] for r in v)) for k, v in runs.items()}
    ref = best["transformers"]
    print(f"\n1.1B Llama (TinyLlama shape), bf16, 3 safetensors shards, {weights / gb:.2f} GB of weights; "
          f"device {args.device}; best load time / worst peak of {args.repeats} fresh process(es) each; "
          f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print(f"{'loader':<14}{'load s':>8}{'x hf':>7}{'+ forward s':>13}{'x hf':>7}{'peak GB':>9}{'x weights':>11}"
          f"{'x hf':>7}{'at load GB':>12}{'imports GB':>12}")
    for name, r in best.items():
        total, ref_total = r["load_s"] + r["forward_s"], ref["load_s"] + ref["forward_s"]
        print(f"{name:<14}{r['load_s']:>8.2f}{r['load_s'] / ref['load_s']:>7.2f}{total:>13.2f}{total / ref_total:>7.2f}"
              f"{r['peak_all'] / gb:>9.2f}{r['peak_all'] / weights:>11.2f}{r['peak_all'] / ref['peak_all']:>7.2f}"
              f"{r['peak_load'] / gb:>12.2f}{r['rss_imports'] / gb:>12.2f}")
    print("\npeak: the process's peak resident memory through load and forward (transformers and minivlm-mmap map "
          "the safetensors files, so the weights become resident when the forward first reads them; minivlm reads "
          "them in at load); at load: the peak when load returned; imports: before it")
    if args.device == "cpu":
        print(f"minivlm with device='meta' (each tensor read, then copied off the host, as to a GPU): load "
              f"{copy_path['load_s']:.2f} s, peak host {copy_path['peak_load'] / gb:.2f} GB, of which "
              f"{(copy_path['peak_load'] - copy_path['rss_imports']) / gb:.2f} GB above the imports")
    diff = (logits["minivlm"] - logits["transformers"]).abs().max().item()
    print(f"\nlogits of one forward (1 x 32 tokens): max |diff| {diff:.3g} (bf16)")


if __name__ == "__main__":
    main()
