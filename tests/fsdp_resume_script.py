"""A small FSDP training run for tests/test_fsdp_resume.py, run under torchrun (or alone) so it can be
killed and resumed on another number of ranks.

    [torchrun --nproc_per_node 2] tests/fsdp_resume_script.py OUT [--grad-accum K] [--pause]

The tiny 2-layer Llama of tests/test_fsdp.py on a ShardedBatches source, --strategy fsdp, a sharded
checkpoint every 2 steps into OUT/checkpoints (resumed from when present). Rank 0 prints "step N"
after each update (--pause: then sleeps, so the test can SIGKILL it mid-run) and writes OUT/final.pt
(the gathered weights and the loss history) at the end."""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from test_train_scaling import B, collate, lm_loss, rows  # noqa: E402

from minivlm.train import distributed  # noqa: E402
from minivlm.train.batches import ShardedBatches  # noqa: E402
from minivlm.train.loop import TrainConfig, train, trained_tokens  # noqa: E402
from test_fsdp import tiny_lm  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--grad-accum", type=int, default=1)
p.add_argument("--pause", action="store_true")
args = p.parse_args()
torch.set_num_threads(1)
distributed.init_from_env("cpu")
os.makedirs(os.path.join(args.out, "pids"), exist_ok=True)  # torchrun's workers run in sessions of their own:
with open(os.path.join(args.out, "pids", f"rank{distributed.rank()}"), "w") as f:  # the test kills them by id
    f.write(str(os.getpid()))


def report(model, step):
    if distributed.is_main():
        print(f"step {step + 1}", flush=True)
    if args.pause:
        time.sleep(0.3)


try:
    model = tiny_lm()
    config = TrainConfig(steps=6, lr=1e-2, progress=False, loss_weight=trained_tokens, strategy="fsdp",
                         grad_accum=args.grad_accum, checkpoint_dir=os.path.join(args.out, "checkpoints"),
                         save_every=2, keep=3, resume=True)
    history = train(model, ShardedBatches(rows(8 * B, seed=1), collate, B, seed=3), lm_loss, config, after_step=report)
    if distributed.is_main():
        torch.save(dict(state=model.state_dict(), losses=history.losses), os.path.join(args.out, "final.pt"))
finally:
    distributed.shutdown()
