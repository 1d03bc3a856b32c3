"""Decode speed against transformers: a thin wrapper over `python -m minivlm bench` (minivlm/bench/speed.py).

    python benchmarks/decode_speed.py [bench options]     # default: --workloads decode decode_1b

The old tiny-LLaMA sweep is gone: the bench builds the issue's real shapes (SmolLM-135M, a 1.1B
Llama in bf16) from configs and reports tokens/s, the ratio to transformers and the fraction of the
machine's measured bandwidth limit.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

if __name__ == "__main__":
    from minivlm.cli import main
    argv = sys.argv[1:]
    if "--workloads" not in argv:
        argv = ["--workloads", "decode", "decode_1b"] + argv
    main(["bench"] + argv)
