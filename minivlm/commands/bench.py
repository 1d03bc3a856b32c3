"""python -m minivlm bench [--workloads decode ...] [--dtype bfloat16] [--device cuda] [--compile] [--json F]
python -m minivlm bench --memory [--workloads decode decode_1b decode_long] [--repeats 3] [--json F]

minivlm and transformers side by side on the same weights, interleaved in one process, with the
machine's measured limits (minivlm/bench.py describes the workloads). --memory measures generation's
peak host memory instead, each implementation in a fresh process (minivlm/bench_memory.py). Speeds are measured, never
asserted: the table is for the README and for finding what is left to gain.
"""
import json
import os

import torch

from minivlm.errors import UsageError

DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(p):
    from minivlm.bench import WORKLOADS
    from minivlm.bench_memory import CASES
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS + tuple(w for w in CASES if w not in WORKLOADS),
                   default=None, help=f"which to run (default: all of {', '.join(WORKLOADS)}; --quick drops "
                   f"decode_1b; with --memory: {', '.join(CASES)})")
    p.add_argument("--dtype", choices=DTYPES, help="one dtype for every workload (default: fp32, bf16 for decode_1b)")
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))
    p.add_argument("--batch-size", type=int, help="images (vision) / sequences (prefill, decode); default 8 / 1 / 1")
    p.add_argument("--prompt-len", type=int, help="decode prompt tokens (default 128; 64 for decode_1b)")
    p.add_argument("--new-tokens", type=int, help="tokens generated (default 64; 32 for decode_1b)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per implementation, interleaved (median shown)")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd decode step (compiling takes minutes on CPU)")
    p.add_argument("--quick", action="store_true", help="one timed run each and no decode_1b: about a minute")
    p.add_argument("--toy", action="store_true", help="tiny shapes (seconds): checks the command, measures nothing useful")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time by the thread's CPU time, not wall-clock (needs --threads 1 on cpu): steady ratios "
                        "on a machine shared with other work")
    p.add_argument("--memory", action="store_true",
                   help="instead of speed: generation's peak host memory (CPU), transformers vs minivlm, each in a "
                        "fresh process, median of --repeats children (--quick: 1)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UsageError("bench needs the reference: pip install -e '.[dev]' (transformers)") from None
    import time

    from minivlm.bench import CLOCK, WORKLOADS, format_table, run_bench
    if args.memory:
        return run_memory(args)
    if args.workloads and not set(args.workloads) <= set(WORKLOADS):
        raise UsageError(f"{', '.join(sorted(set(args.workloads) - set(WORKLOADS)))}: a --memory workload only; "
                         f"speed workloads are {', '.join(WORKLOADS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        if args.threads != 1 or args.device != "cpu":
            raise UsageError(f"--cpu-time needs --threads 1 --device cpu (one thread does all the work), got "
                             f"--threads {args.threads} --device {args.device}")
        CLOCK["now"] = time.thread_time
    workloads = args.workloads or [w for w in WORKLOADS if not (args.quick and w == "decode_1b")]
    result = run_bench(workloads, dtype=getattr(torch, args.dtype) if args.dtype else None, device=args.device,
                       batch_size=args.batch_size, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                       repeats=1 if args.quick else args.repeats, compile=args.compile, toy=args.toy)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def run_memory(args):
    from minivlm.bench_memory import CASES, TOY_CASES, format_memory_table, run_memory_bench
    if args.device != "cpu":
        raise UsageError(f"--memory measures host memory (resident pages) and runs on cpu, got --device {args.device}")
    cases = TOY_CASES if args.toy else CASES
    unknown = [w for w in args.workloads or [] if w not in cases]
    if unknown:
        raise UsageError(f"--memory{' --toy' if args.toy else ''} workloads are {', '.join(cases)}; "
                         f"got {', '.join(unknown)}")
    rows = run_memory_bench(args.workloads, toy=args.toy, batch=args.batch_size or 1, prompt_len=args.prompt_len,
                            new_tokens=args.new_tokens, repeats=1 if args.quick else args.repeats)
    print(format_memory_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            from minivlm.fast.cpu import cpu_info
            json.dump({"cpu": cpu_info(), "memory": rows}, f, indent=1)
    return 0
