"""`python -m minivlm bench`: minivlm against transformers on this machine (minivlm/commands/bench.py).

    speed.py   the workloads (vision forward, LLaVA prefill, decode at two sizes), interleaved runs,
               medians, greedy ids checked equal, the CPU named in the table
    memory.py  `bench --memory`: peak memory of generate, each implementation in a fresh process
"""
