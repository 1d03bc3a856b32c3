"""A small training run for tests/test_train_resume.py, run as its own process so it can be killed.

    python tests/train_resume_script.py OUT [--kill-while-saving STEP | --no-pause]

Dropout, batches drawn from the global torch RNG, a loss_fn drawing from its own torch.Generator:
every kind of random state a resume must restore. Prints "step N" after each update and pauses a
little, so the test can SIGKILL it mid-run; ends by writing OUT/final.pt (weights + loss history).
"""
import os
import signal
import sys
import time

import torch

from minivlm.train import checkpointing
from minivlm.train.loop import TrainConfig, train

torch.set_num_threads(1)  # one thread: the same run gives the same bits
out = sys.argv[1]
kill_step = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--kill-while-saving" else None
pause = 0.0 if "--no-pause" in sys.argv else 0.1

if kill_step is not None:  # die half-way through writing checkpoint kill_step: after rng, before state.pt
    write = checkpointing._fsync_write

    def dying_write(path, fn):
        if path.name == "state.pt" and path.parent.name == f"step-{kill_step:08d}.tmp":
            os.kill(os.getpid(), signal.SIGKILL)
        write(path, fn)

    checkpointing._fsync_write = dying_write

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 3))
generator = torch.Generator().manual_seed(1)


def batches():
    while True:  # the global RNG: replayed on resume, then restored
        x = torch.randn(16, 6)
        yield {"x": x, "y": torch.randint(0, 3, (16,))}


def loss_fn(m, b):
    noise = 0.01 * torch.randn(b["x"].shape, generator=generator)  # a private generator, like BLIP's negatives
    return torch.nn.functional.cross_entropy(m(b["x"] + noise), b["y"])


def report(model, step):
    print(f"step {step + 1}", flush=True)
    time.sleep(pause)


config = TrainConfig(steps=12, lr=3e-3, progress=False, checkpoint_dir=os.path.join(out, "checkpoints"),
                     save_every=3, keep=2, resume=True, generators=(generator,))
history = train(model, batches(), loss_fn, config, after_step=report)
torch.save(dict(state=model.state_dict(), losses=history.losses, lrs=history.lrs), os.path.join(out, "final.pt"))
