"""FSDP (train/fsdp.py) and activation checkpointing (train/activation_checkpointing.py) on 2 CPU
processes (gloo), each checked against one process training on the whole batch (grad accumulation).

Tolerances (fp32): the losses of the same updates agree to rel 1e-5 and the parameters to 1e-4, as
for DDP (tests/test_train_scaling.py, where the reasons are measured): FSDP reduce-scatters in
another order than one process sums, and Adam's first update amplifies roundoff where g ~ 1e-8.
Recomputing a layer in backward runs the same ops on the same inputs: its losses are equal to rel
1e-6 (measured bitwise here, the margin is for other CPUs' kernels)."""
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp

from minivlm.models.llava import LlavaConfig, LlavaForConditionalGeneration, freeze
from minivlm.text.llama_config import LlamaConfig
from minivlm.train import activation_checkpointing, distributed, fsdp
from minivlm.train.batches import ShardedBatches
from minivlm.train.loop import TrainConfig, train, trained_tokens
from minivlm.train.plan import PeakMemory
from minivlm.vision.config import VisionConfig
from minivlm.text.llama import LlamaForCausalLM
from test_train_scaling import B, PARAM_TOL, collate, free_port, lm_loss, max_diff, rows

STEPS = 4


def tiny_lm(layers=2, seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32))


def lm_run(items, world_options=None, **options):
    """STEPS updates of a 2-layer tiny LM over a sharded source; (model, history)."""
    model = tiny_lm()  # 2 layers: 2 FSDP units and the root
    history = train(model, ShardedBatches(items, collate, B, seed=3), lm_loss,
                    TrainConfig(steps=STEPS, lr=1e-2, progress=False, grad_clip=1.0, loss_weight=trained_tokens,
                                **options))
    return model, history


def tiny_llava(seed=0):
    torch.manual_seed(seed)
    vision = VisionConfig(image_size=16, patch_size=8, hidden_size=16, num_layers=2, num_heads=2,
                          intermediate_size=24, pre_norm=True, final_norm="none", pooler="none")
    text = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_index=39,
                                                     image_seq_length=4, vision_feature_layer=-1))


def llava_items(n, seed=0):
    """n rows: 4 <image> tokens (4 patches of a 16 x 16 image), then text; images not in the labels."""
    out = []
    for i, r in enumerate(rows(n, seed, length=8)):
        text = r["input_ids"].clamp(max=38)  # 39 is <image>
        ids = torch.cat([torch.full((4,), 39), text])
        labels = torch.cat([torch.full((4,), -100), text.masked_fill(r["labels"] == -100, -100)])
        mask = torch.cat([torch.ones(4, dtype=torch.long), r["attention_mask"]])
        g = torch.Generator().manual_seed(seed * 1000 + i)
        out.append(dict(input_ids=ids, labels=labels, attention_mask=mask, pixel_values=torch.randn(3, 16, 16, generator=g)))
    return out


def llava_run(items, stage, **options):
    model = tiny_llava()
    freeze(model, stage)
    history = train(model, ShardedBatches(items, collate, B, seed=5), lambda m, b: m(**b).loss,
                    TrainConfig(steps=3, lr=1e-2, progress=False, loss_weight=trained_tokens, **options))
    return model, history


def _worker(rank, world, port, out, items, llava):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    distributed.init_from_env("cpu")
    torch.set_num_threads(1)
    try:
        results = {}
        for name, options in dict(fsdp=dict(strategy="fsdp"),
                                  fsdp_ac=dict(strategy="fsdp", activation_checkpointing=True),
                                  fsdp_bf16=dict(strategy="fsdp", precision="bf16")).items():
            model, h = lm_run(items, **options)
            results[name] = (h.losses, h.memory, list(model.parameters()))
        for stage in (1, 2):
            model, h = llava_run(llava, stage, strategy="fsdp")
            results[f"llava{stage}"] = (h.losses, dict(model.named_parameters()))
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()


@pytest.fixture(scope="module")
def two_ranks():
    items, llava = rows(8 * B, seed=1), llava_items(6 * B, seed=2)
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(2, free_port(), out, items, llava), nprocs=2, join=True)
        ranks = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(2)]
    torch.set_num_threads(1)
    return items, llava, ranks


def test_fsdp_two_ranks_equal_one_process_with_accumulation(two_ranks):
    items, _, ranks = two_ranks
    single, h = lm_run(items, grad_accum=2)
    (losses0, _, params0), (losses1, _, params1) = ranks[0]["fsdp"], ranks[1]["fsdp"]
    assert losses0 == losses1 and losses0 == pytest.approx(h.losses, rel=1e-5, abs=0)
    assert h.losses[-1] < h.losses[0] - 0.05  # it learns (3.85 -> 3.76), so equal curves say something
    assert all(torch.equal(p, q) for p, q in zip(params0, params1))  # gathered back: the same whole model
    assert max_diff(params0, single) < PARAM_TOL


def test_fsdp_holds_half_of_ddps_training_state_per_rank(two_ranks):
    items, _, ranks = two_ranks
    # A DDP rank holds what one process holds (tests/test_train_scaling.py checks DDP's copies are equal):
    # the whole model, its gradients and both AdamW moments, measured here on one process.
    replicated = lm_run(items, grad_accum=2)[1].memory
    assert replicated["optimizer"] == 2 * replicated["weights"] == 2 * replicated["grads"]
    for r in ranks:
        sharded = r["fsdp"][1]
        # every tensor of the tiny LM has an even first dimension: exactly half, measured on the shards
        for part in ("weights", "grads", "optimizer"):
            assert replicated[part] > 0 and sharded[part] == replicated[part] // 2, (part, sharded, replicated)


def test_fsdp_with_activation_checkpointing_and_bf16(two_ranks):
    _, _, ranks = two_ranks
    fp32 = ranks[0]["fsdp"][0]
    assert ranks[0]["fsdp_ac"][0] == pytest.approx(fp32, rel=1e-6, abs=0)
    bf16 = ranks[0]["fsdp_bf16"][0]
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=2e-2)  # computed in bf16, still the same curve
    assert all(p.dtype == torch.float32 for p in ranks[0]["fsdp_bf16"][2])  # the shards AdamW updates stay fp32


@pytest.mark.parametrize("stage", [1, 2])
def test_fsdp_llava_stage_trains_its_parts_only(two_ranks, stage):
    _, llava, ranks = two_ranks
    single, h = llava_run(llava, stage, grad_accum=2)
    before = dict(tiny_llava().named_parameters())
    losses, params = ranks[0][f"llava{stage}"]
    assert losses == pytest.approx(h.losses, rel=1e-5, abs=0)
    for name, p in single.named_parameters():
        assert (params[name] - p).abs().max() < PARAM_TOL, name
        if not p.requires_grad:  # the frozen tower (and the stage-1 LM): not one bit moved under FSDP
            assert torch.equal(params[name], before[name]), name
    assert torch.equal(params["vision_tower.encoder.layers.0.attn.q_proj.weight"],
                       before["vision_tower.encoder.layers.0.attn.q_proj.weight"])


def test_sharding_units_are_the_decoder_layers_and_tower_blocks():
    model = tiny_llava()
    units = fsdp.sharding_units(model)
    assert units == list(model.vision_tower.encoder.layers) + list(model.language_model.model.layers)


def test_activation_checkpointing_same_gradients_lower_peak():
    torch.set_num_threads(1)
    items = rows(2 * B, seed=4, length=32)
    batch = collate(items)

    def step(recompute):
        model = tiny_lm(layers=4)
        units = activation_checkpointing.apply(list(model.model.layers)) if recompute else []
        with PeakMemory() as memory:
            lm_loss(model, batch).backward()
        activation_checkpointing.remove(units)
        assert "forward" not in vars(model.model.layers[0])
        return [p.grad for p in model.parameters()], memory.peak

    grads, peak = step(False)
    grads_ac, peak_ac = step(True)
    assert max_diff(grads, grads_ac) == pytest.approx(0.0, abs=1e-7)
    assert peak_ac < 0.6 * peak, (peak_ac, peak)  # measured 1.11 MB vs 2.82 MB (4 layers, 8 x 32 tokens)


def test_command_line_options_reach_the_loop():
    from argparse import Namespace
    from minivlm.train.loop import options_from_args
    args = Namespace(strategy="fsdp", activation_checkpointing=True, grad_accum=1, precision="fp32")
    assert options_from_args(args) == dict(strategy="fsdp", activation_checkpointing=True)
    with pytest.raises(ValueError, match="strategy must be one of"):
        TrainConfig(steps=1, strategy="zero3")
