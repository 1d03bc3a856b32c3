"""A compiled decode step: each decoder layer's one-token step compiled once by torch.compile.

In eager mode a decode step of a small model is mostly Python and kernel launches: ~20 small ops per
layer, each costing microseconds while the matmuls themselves are short. torch.compile traces the
layer's step once and fuses the elementwise work (norms, rotary, SiLU * up, residual adds) into a few
kernels; on a GPU it can also capture it as a CUDA graph. It needs every step to have the same shapes,
which the static KV cache gives (blocks/kv_cache.py): a layer attends over the whole buffer and the
decoder's mask hides the slots not written yet, in eager and compiled decoding alike. The prefill
(variable length), the masks, the RoPE table lookup and the cache's bookkeeping stay eager: the
compiled code never reads a Python length (which would recompile it every step) nor moves a tensor.

    decoder = CompiledDecoder(model)            # LlamaForCausalLM, or LLaVA (its language_model)
    ids = generate(decoder, input_ids=..., max_new_tokens=n)   # the same tensor as model.generate

CompiledDecoder is a model as generate() sees it: every call goes to the model, and during a decode
call (one new token, a cache already filled) each decoder layer and the lm_head run compiled. The model
itself is left as it was between calls.
"""
import time
from contextlib import contextmanager

import torch
from torch import nn

from ..outputs import ModelOutput


def module_step(module: nn.Module, *args):
    """A module's forward as its class (readable or swapped) writes it: what gets compiled, once per
    kind of module (every decoder layer shares one graph; the lm_head has its own)."""
    return type(module).forward(module, *args)


class CompiledDecoder:
    static_kv_cache = True  # generate() hands it a StaticKVCache: the fixed buffers the step needs

    def __init__(self, model: nn.Module, compile: bool = True, **compile_options):
        self.model = model
        self.decoder = getattr(model, "language_model", model)  # a LlamaForCausalLM
        if getattr(self.decoder.model.rope, "mrope_section", None) is not None:
            raise ValueError("the compiled decode step takes (B, 1) positions; M-RoPE (Qwen2-VL's (3, B, 1) "
                             "positions) is not supported there: use the model's own generate")
        self.generation_config = getattr(model, "generation_config", None)
        self.step = torch.compile(module_step, dynamic=False, **compile_options) if compile else module_step
        self.compile_seconds = None  # wall time of the first (compiling) decode call, for the bench

    @contextmanager
    def compiled_layers(self):
        """Each decoder layer and the lm_head run self.step for the duration of one call, then are
        themselves again."""
        modules = [*self.decoder.model.layers, self.decoder.lm_head]
        for module in modules:
            module.forward = lambda *args, module=module: self.step(module, *args)
        try:
            yield
        finally:
            for module in modules:
                del module.forward

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 use_cache=True, **kwargs) -> ModelOutput:
        cache = past_key_values
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=cache, use_cache=use_cache, **kwargs)
        # Prefill, and dynamic-NTK RoPE (its frequencies change with the length), stay eager.
        if cache is None or len(cache) == 0 or input_ids is None or input_ids.shape[1] != 1 \
                or self.decoder.model.rope.dynamic:
            return self.model(**inputs)
        start = time.perf_counter()
        with self.compiled_layers():
            out = self.model(**inputs)
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - start
        return out
