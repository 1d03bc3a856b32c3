"""Decode speed: minivlm's generate vs transformers' generate on the same tiny LLaMA, one run.

    python benchmarks/decode_speed.py [--layers 4 --hidden 256 --batch 1 4 --prompt 32 --new 64 --threads 1]

Both models hold the same weights (HF's, converted through weights_convert), decode greedily with
the KV cache and no eos (every run makes exactly --new tokens), and must produce identical ids.
Tokens/s = batch * new tokens / wall time of the whole generate call (prefill included), best of
--repeats. minivlm without the cache is shown too: what the cache buys.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def best_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import transformers
    import weights_convert
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                      num_key_value_heads=args.kv_heads, eos_token_id=None, bos_token_id=None)
    reference = transformers.LlamaForCausalLM(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        ours = weights_convert.load_pretrained(folder, device=args.device)
    reference = reference.to(args.device)

    print(f"LLaMA {args.layers} layers, hidden {args.hidden}, heads {args.heads}/{args.kv_heads} kv, vocab {args.vocab}; "
          f"prompt {args.prompt}, {args.new} new tokens, greedy; {args.device}, {args.threads} thread(s), "
          f"torch {torch.__version__}, transformers {transformers.__version__}\n")
    rows = []
    for batch in args.batch:
        ids = torch.randint(0, args.vocab, (batch, args.prompt), generator=torch.Generator().manual_seed(batch))
        ids = ids.to(args.device)
        mask = torch.ones_like(ids)
        with torch.no_grad():
            t_hf, hf_ids = best_time(lambda: reference.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                                                max_new_tokens=args.new, min_new_tokens=args.new),
                                     args.repeats)
            t_ours, our_ids = best_time(lambda: ours.generate(input_ids=ids, attention_mask=mask,
                                                              max_new_tokens=args.new), args.repeats)
            t_plain, plain_ids = best_time(lambda: ours.generate(input_ids=ids, attention_mask=mask, use_cache=False,
                                                                 max_new_tokens=args.new), 1)
        same = torch.equal(hf_ids, our_ids) and torch.equal(our_ids, plain_ids)
        tokens = batch * args.new
        rows += [(batch, "transformers generate", tokens / t_hf, t_hf, same),
                 (batch, "minivlm generate", tokens / t_ours, t_ours, same),
                 (batch, "minivlm, no KV cache", tokens / t_plain, t_plain, same)]
    print(f"{'batch':>5}  {'implementation':<22} {'tokens/s':>9} {'seconds':>8}  ids equal")
    for batch, name, speed, seconds, same in rows:
        print(f"{batch:>5}  {name:<22} {speed:>9.0f} {seconds:>8.3f}  {'yes' if same else 'NO'}")
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
