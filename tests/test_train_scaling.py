"""Bigger batches than one step holds: gradient accumulation, bf16 autocast, and data-parallel DDP
with 2 CPU processes (gloo) — each checked against one process training on the whole batch.

The model is a tiny Llama LM on padded rows whose trained-token counts differ a lot from row to row:
its loss is a mean over tokens, so K micro-batches (or W ranks) equal one big batch only when each
counts by its tokens (loss_weight=trained_tokens). The tests also show the equal-weight average is
NOT that update, so they could fail."""
import os
import socket
import tempfile

import pytest
import torch
import torch.multiprocessing as mp

from minivlm.text.llama import LlamaForCausalLM
from minivlm.text.llama_config import LlamaConfig
from minivlm.train import distributed
from minivlm.train.batches import ShardedBatches
from minivlm.train.loop import TrainConfig, train, trained_tokens

B = 4          # rows per micro-batch / per rank
# fp32 tolerances. Gradients of the same update agree to roundoff (measured 1.5e-8 of max |g| 0.16).
# Parameters after AdamW steps agree less well: Adam's first update is lr * g / (|g| + 1e-8), so where
# a gradient is ~1e-8 its roundoff moves that element by up to lr (measured 3e-5 at lr 1e-2); the
# equal-weight average is off by 2e-2.
GRAD_TOL, PARAM_TOL = 1e-7, 1e-4


def tiny_lm(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32))


def rows(n, seed=0, length=12):
    """n padded rows: random lengths 3..12, a random prompt part masked out of the labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 40, (n, length), generator=g)
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    prompt = (torch.rand(n, generator=g) * lengths).long()
    pos = torch.arange(length)
    mask = (pos < lengths[:, None]).long()
    labels = ids.masked_fill((mask == 0) | (pos < prompt[:, None]), -100)
    return [dict(input_ids=ids[i], attention_mask=mask[i], labels=labels[i]) for i in range(n)]


def collate(items):
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def lm_loss(model, batch):
    return model(**batch).loss


def batches(items, size):
    """Consecutive batches of `size` rows, cycling."""
    k = 0
    while True:
        yield collate([items[(k * size + i) % len(items)] for i in range(size)])
        k += 1


def last_grads(model, log):
    """An after_step hook keeping the gradients of each update (set to None only at the next step)."""
    return lambda m, step: log.append([p.grad.clone() for p in model.parameters()])


def run(items, size, steps, source=None, **options):
    model, grads = tiny_lm(), []
    history = train(model, source or batches(items, size), lm_loss,
                    TrainConfig(steps=steps, lr=1e-2, progress=False, grad_clip=None, **options),
                    after_step=last_grads(model, grads))
    return model, history, grads


def max_diff(a, b):
    a = a.parameters() if isinstance(a, torch.nn.Module) else a
    b = b.parameters() if isinstance(b, torch.nn.Module) else b
    return max((p - q).abs().max().item() for p, q in zip(a, b))


def test_grad_accumulation_is_one_big_batch():
    items = rows(6 * B)
    big, big_h, big_g = run(items, 2 * B, steps=3)
    acc, acc_h, acc_g = run(items, B, steps=3, grad_accum=2, loss_weight=trained_tokens)
    assert max_diff(big_g[0], acc_g[0]) < GRAD_TOL  # the first update, from the same parameters
    assert acc_h.losses == pytest.approx(big_h.losses, rel=1e-5, abs=0)
    assert max_diff(big, acc) < PARAM_TOL
    # Averaging the two micro-batch means (equal weights) is a different update: the token counts matter.
    naive, _, naive_g = run(items, B, steps=3, grad_accum=2)
    assert max_diff(big_g[0], naive_g[0]) > 100 * GRAD_TOL and max_diff(big, naive) > 100 * PARAM_TOL


def test_bf16_runs_the_forward_in_bf16_and_keeps_fp32_weights():
    seen = []

    def loss_fn(m, b):
        y = m(b)
        seen.append(y.dtype)
        return y.float().pow(2).mean()

    model = torch.nn.Linear(8, 8)
    train(model, iter([torch.randn(4, 8)] * 3), loss_fn, TrainConfig(steps=3, progress=False, precision="bf16"))
    assert seen == [torch.bfloat16] * 3 and model.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(steps=1, precision="fp16")


def test_bf16_autocast_still_learns_a_shapes_recipe():
    from minivlm.train.dual_encoder import train_dual_encoder
    size = dict(image_size=16, patch_size=4, width=32, layers=1, heads=2, mlp=64, projection_dim=32)
    _, history, _ = train_dual_encoder("clip", steps=60, batch_size=16, size=size, progress=False, eval_count=8,
                                       precision="bf16")
    assert history.mean_loss(last=10) < 0.7 * history.mean_loss(first=10)  # log(16) = 2.77 to start


# -- DDP: 2 CPU processes, gloo ------------------------------------------------------------------------

def _worker(rank, world, port, out, items):
    # The environment torchrun gives each process; init_from_env joins the group from it (gloo on CPU).
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    assert distributed.init_from_env("cpu") == "cpu" and distributed.world_size() == world
    torch.set_num_threads(1)
    try:
        results = {}
        # 1 step, 2 ranks x B rows each, from an iterator (each rank keeps its own batches).
        model, _, grads = run(items, B, steps=1, loss_weight=trained_tokens)
        results["one_step"] = (list(model.parameters()), grads[0])
        # 20 steps from a random-access source over a dataset (ShardedBatches): the loss curve.
        model, h, _ = run(items, B, steps=20, source=ShardedBatches(items, collate, B, seed=3),
                          loss_weight=trained_tokens)
        results["curve"] = (h.losses, list(model.parameters()))
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_one_process_with_both_batches():
    items = rows(8 * B, seed=1)
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(2, free_port(), out, items), nprocs=2, join=True)
        ranks = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(2)]
    assert not distributed.active()
    torch.set_num_threads(1)
    # One step: one process on the 2B rows of both ranks.
    single, _, grads = run(items, 2 * B, steps=1)
    (params0, grads0), (params1, grads1) = ranks[0]["one_step"], ranks[1]["one_step"]
    assert all(torch.equal(p, q) for p, q in zip(params0, params1))  # DDP keeps the copies equal
    assert max_diff(grads0, grads[0]) < GRAD_TOL and max_diff(grads1, grads[0]) < GRAD_TOL
    assert max_diff(params0, single) < PARAM_TOL
    # A 20-step curve: one process, grad_accum 2 over the same sharded source (micro-batches g = 2s, 2s+1).
    single, h, _ = run(items, B, steps=20, source=ShardedBatches(items, collate, B, seed=3), grad_accum=2,
                       loss_weight=trained_tokens)
    (losses0, params0), (losses1, _) = ranks[0]["curve"], ranks[1]["curve"]
    assert losses0 == losses1 and losses0 == pytest.approx(h.losses, rel=1e-5, abs=0)
    assert h.losses[-1] < 0.8 * h.losses[0]
    assert max_diff(params0, single) < PARAM_TOL


def test_sharded_batches_cover_each_epoch_once():
    source = ShardedBatches(list(range(10)), list, 3, seed=0)
    epoch0 = [source.indices(g) for g in range(3)]  # 10 // 3 = 3 batches, one record dropped
    assert len({i for b in epoch0 for i in b}) == 9
    assert [source.indices(g) for g in range(3)] == epoch0 and source.indices(3) != epoch0[0]
    with pytest.raises(ValueError, match="fewer than one batch"):
        ShardedBatches([1], list, 2)
