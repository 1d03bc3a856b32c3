"""A compiled decode step: one token through the decoder, compiled once by torch.compile.

In eager mode a decode step of a small model is mostly Python and kernel launches: ~20 small ops per
layer, each costing microseconds while the matmuls themselves are short. torch.compile traces the
step once and fuses the elementwise work (norms, rotary, SiLU * up, residual adds) into a few
kernels; on a GPU it can also capture the step as a CUDA graph. It needs every step to have the
same shapes, so the step attends over the *whole* static cache buffer (B, H_kv, max_len, Dh) and a
(B, 1, 1, max_len) mask hides the slots not written yet — instead of the growing views the eager
path uses. The prefill (variable length) stays eager.

    decoder = CompiledDecoder(model)            # LlamaForCausalLM, or LLaVA (its language_model)
    ids = generate(decoder, input_ids=..., max_new_tokens=n)   # the same tensor as model.generate

CompiledDecoder is a model as generate() sees it: prefill calls go to the eager model, decode calls
(one new token and a StaticKVCache already filled) to the compiled step.
"""
import time

import torch

from ..blocks.masks import padding_mask
from ..blocks.rotary import rope_cos_sin
from ..outputs import ModelOutput


class CompiledDecoder:
    static_kv_cache = True  # generate() hands it a StaticKVCache: the fixed buffers the step needs

    def __init__(self, model, compile=True, **compile_options):
        self.model = model
        self.decoder = getattr(model, "language_model", model)  # a LlamaForCausalLM
        if getattr(self.decoder.model.rope, "mrope_section", None) is not None:
            raise ValueError("the compiled decode step takes (B, 1) positions; M-RoPE (Qwen2-VL's (3, B, 1) "
                             "positions) is not supported there: use the model's own generate")
        self.generation_config = getattr(model, "generation_config", None)
        self.step = torch.compile(self.decode_step, dynamic=False, **compile_options) if compile else self.decode_step
        self.compile_seconds = None  # wall time of the first (compiling) call, for the bench

    def decode_step(self, input_ids, position_ids, masks, layers):
        """input_ids, position_ids (B, 1); masks: one (B, 1, 1, max_len) bool per layer -> logits (B, 1, V).
        The same layers as LlamaModel.forward; each layer cache writes its k, v at its `slot`."""
        body = self.decoder.model
        x = body.embed_tokens(input_ids)  # (B, 1, D)
        rope = rope_cos_sin(position_ids, body.rope.inv_freq, x.dtype)  # computed in-graph: no table lookup
        for layer, mask, cache in zip(body.layers, masks, layers):
            x = layer(x, mask, rope, cache)
        return self.decoder.lm_head(body.norm(x))

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 use_cache=True, **kwargs):
        cache = past_key_values
        # Prefill, and dynamic-NTK RoPE (its frequencies change with the length), stay eager.
        if cache is None or len(cache) == 0 or input_ids is None or input_ids.shape[1] != 1 or self.decoder.model.rope.dynamic:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              past_key_values=cache, use_cache=use_cache, **kwargs)
        cache.allocate()  # the prompt's k, v into the fixed buffers the compiled step writes into
        layers = cache.layers
        past, max_len = len(cache), layers[0].k.shape[2]
        slot = torch.tensor([past], device=input_ids.device)
        key_mask = torch.zeros(input_ids.shape[0], max_len, dtype=torch.bool, device=input_ids.device)
        key_mask[:, :past + 1] = attention_mask.bool()  # real tokens written so far; the rest hidden
        config = self.decoder.config
        masks = {}  # window -> mask; Mistral's rule: the query at slot `past` sees keys past - window < k <= past
        for w in {config.layer_window(i) for i in range(len(layers))}:
            masks[w] = key_mask.clone()
            if w is not None:
                masks[w][:, :max(0, past + 1 - w)] = False
            masks[w] = padding_mask(masks[w])
        per_layer = [masks[config.layer_window(i)] for i in range(len(layers))]
        for layer in layers:
            layer.slot = slot
        start = time.perf_counter()
        try:
            logits = self.step(input_ids, position_ids, per_layer, layers)
        finally:
            for layer in layers:
                layer.slot = None
                layer.length += 1
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - start
        return ModelOutput(logits=logits, past_key_values=cache)
