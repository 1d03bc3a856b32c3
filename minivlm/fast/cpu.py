"""What this CPU is, and which kernel routes were shown equal (and faster) on it.

The project runs on more than one CPU: Intel with AMX tiles (bf16 matmuls in hardware), AMD EPYC
Zen 4 (AVX-512 with bf16 dot products, no AMX), and AVX2-only parts. torch picks a different kernel
on each, so "torch.mv gives F.linear's bits and is faster" is a fact about one machine's kernels,
not about the code. Measured on 2026-12-07 (bf16, one row, 2048 inputs):

    Intel AMX       mv equal to F.linear for every decode shape, 1.4-1.6x faster
    AMD Zen 4       mv differs from F.linear at 2048->2560 with bias and 2048->32000
    AMD (AVX2)      addmv (bias) differs at 5632 / 32000 outputs and is ~10x slower; mv no faster

With a bias the products differ only now and then (addmv rounds W x before adding b on some CPUs,
so a difference needs a double rounding to land on another value): a random probe missed it on
one shape and a test caught it on another. So a layer with a bias never takes the route; for the
bias-free product a kernel with another summation order differs in most outputs, which a probe of
a few rows cannot miss.

So the route is not decided by a list of CPUs. It is decided here, on the running machine, once per
(dtype, out, in) shape: the two kernels are run on two random rows, and torch.mv is used only
where its output has exactly F.linear's bits AND it took less time (by `MIN_SPEEDUP`). Equality is
what the parity promise rests on, so it is never traded for speed: a shape that differs keeps
F.linear. The speed half is a measurement and may differ run to run on a loaded machine; since
only bit-equal shapes can take the route, that changes the time, never the numbers.
"""
from __future__ import annotations

import functools
import os
import platform
import time

import torch
from torch.nn import functional as F

MATVEC_DTYPES = (torch.bfloat16,)  # float32 one-row F.linear already reaches a matrix-vector kernel
MIN_SPEEDUP = 1.1  # mv must beat F.linear's time by 10% to be worth a second code path
PROBE_ROWS = 4
ENV_SWITCH = "MINIVLM_MATVEC"  # "off": never route; "on": skip the speed half (equality still checked)


def _cpuinfo_field(name: str) -> str:
    """The first `name : value` line of /proc/cpuinfo ("" where there is none, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.lru_cache(maxsize=None)
def cpu_info() -> dict:
    """The CPU as a benchmark or a bug report should name it: model, the bf16-relevant ISA, and the
    kernels torch dispatches to (ATen's capability, oneDNN's ISA cap if one is set)."""
    flags = set(_cpuinfo_field("flags").split())
    if {"amx_tile", "amx_bf16"} <= flags:
        isa = "AMX"
    elif "avx512_bf16" in flags:
        isa = "AVX-512 bf16"
    elif "avx512f" in flags:
        isa = "AVX-512"
    elif "avx2" in flags:
        isa = "AVX2"
    else:
        isa = "other"
    return {
        "model": _cpuinfo_field("model name") or platform.processor() or platform.machine(),
        "isa": isa,
        "amx": "amx_tile" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def cpu_summary() -> str:
    """One line: 'AMD EPYC 9R14 (AVX-512 bf16; ATen AVX512, 2 threads)'."""
    info = cpu_info()
    cap = info["torch_cpu_capability"] + (f", oneDNN<={info['onednn_max_cpu_isa']}" if info["onednn_max_cpu_isa"] else "")
    return f"{info['model']} ({info['isa']}; ATen {cap}, {torch.get_num_threads()} threads)"


def _matvec(weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.mv(weight, v)


def _best_time(fn, repeats: int = 5) -> float:
    fn()  # warm: first calls pick and cache kernels
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=None)
def _probe(dtype: torch.dtype, out_features: int, in_features: int, check_speed: bool) -> bool:
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=gen).to(dtype)
    for _ in range(PROBE_ROWS):
        x = torch.randn(1, in_features, generator=gen).to(dtype)
        if not torch.equal(_matvec(weight, x[0])[None], F.linear(x, weight)):
            return False
    if not check_speed:
        return True
    x = torch.randn(1, in_features, generator=gen).to(dtype)
    t_linear = _best_time(lambda: F.linear(x, weight))
    t_mv = _best_time(lambda: _matvec(weight, x[0]))
    return t_mv * MIN_SPEEDUP <= t_linear


def matvec_route_ok(dtype: torch.dtype, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether a one-row product with this weight may go through torch.mv on this machine: no bias,
    the dtype is one the route serves, the weight is on the CPU, and the cached probe for this shape found
    mv bit-equal to F.linear and faster. MINIVLM_MATVEC=off turns the route off, =on skips the
    timing (tests use it to exercise the route wherever it is exact)."""
    switch = os.environ.get(ENV_SWITCH, "").lower()
    if (switch == "off" or bias is not None or dtype not in MATVEC_DTYPES or weight.device.type != "cpu"
            or weight.dtype != dtype):
        return False
    out_features, in_features = weight.shape
    return _probe(dtype, out_features, in_features, check_speed=switch != "on")
