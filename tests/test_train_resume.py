"""Checkpoints (train/checkpointing.py): a run SIGKILLed mid-training, or while writing a checkpoint,
resumes to the same bits as the run that was never interrupted; a damaged checkpoint is refused."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minivlm.train import checkpointing
from minivlm.train.checkpointing import CheckpointError
from minivlm.train.loop import TrainConfig, train

SCRIPT = Path(__file__).with_name("train_resume_script.py")
ROOT = Path(__file__).resolve().parents[1]


def start(out, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), *extra], stdout=subprocess.PIPE, text=True, env=env)


def finish(proc):
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


def test_killed_runs_resume_to_the_same_bits(tmp_path):
    reference = start(tmp_path / "ref", "--no-pause")
    # 1. SIGKILL from outside while step 8 runs (checkpoints at 3 and 6 exist).
    killed = start(tmp_path / "run")
    for line in killed.stdout:
        if line.strip() == "step 7":
            killed.send_signal(signal.SIGKILL)
            break
    assert killed.wait(timeout=60) == -signal.SIGKILL
    names = [p.name for p in checkpointing.checkpoints(tmp_path / "run" / "checkpoints" / "train")]
    assert names == ["step-00000003", "step-00000006"]
    # 2. Resumed, then killed again half-way through writing checkpoint 9: only a .tmp folder is left.
    code, printed = finish(start(tmp_path / "run", "--kill-while-saving", "9"))
    assert code == -signal.SIGKILL and printed.split() == ["step", "7", "step", "8", "step", "9"]
    folder = tmp_path / "run" / "checkpoints" / "train"
    assert (folder / "step-00000009.tmp").is_dir()
    assert checkpointing.latest(folder).name == "step-00000006"
    # 3. Resumed from step 6 again, to the end.
    code, printed = finish(start(tmp_path / "run"))
    assert code == 0 and printed.split()[1::2] == [str(s) for s in range(7, 13)]
    assert finish(reference)[0] == 0
    ref, run = (torch.load(tmp_path / d / "final.pt") for d in ("ref", "run"))
    assert run["losses"] == ref["losses"] and run["lrs"] == ref["lrs"] and len(ref["losses"]) == 12
    for name, tensor in ref["state"].items():
        assert torch.equal(run["state"][name], tensor), name  # bitwise, one thread
    assert [p.name for p in checkpointing.checkpoints(folder)] == ["step-00000009", "step-00000012"]  # keep=2


def tiny_run(folder, steps=4, resume=False, save_every=2):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    data = iter([torch.randn(4, 3) for _ in range(steps)])
    config = TrainConfig(steps=steps, progress=False, checkpoint_dir=str(folder), save_every=save_every, resume=resume)
    return model, train(model, data, lambda m, b: m(b).pow(2).mean(), config)


@pytest.mark.parametrize("damage, message", [
    ("flip", r"state\.pt has sha256 .* \(corrupted\)"),
    ("truncate", r"state\.pt is \d+ bytes, the manifest says \d+ \(truncated"),
    ("rng", r"rng-rank0\.pt has sha256 .* \(corrupted\)"),
    ("manifest", r"has no manifest\.json"),
    ("unreadable", r"manifest\.json is unreadable"),   # the hint names the checkpoint's folder, not the file
])
def test_a_damaged_checkpoint_is_refused_by_name(tmp_path, damage, message):
    tiny_run(tmp_path)
    newest = tmp_path / "train" / "step-00000004"
    if damage == "flip":
        data = bytearray((newest / "state.pt").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (newest / "state.pt").write_bytes(bytes(data))
    elif damage == "truncate":
        data = (newest / "state.pt").read_bytes()
        (newest / "state.pt").write_bytes(data[:len(data) - 100])
    elif damage == "rng":
        data = bytearray((newest / "rng-rank0.pt").read_bytes())
        data[-30] ^= 0x01
        (newest / "rng-rank0.pt").write_bytes(bytes(data))
    elif damage == "unreadable":
        (newest / "manifest.json").write_text("{not json")
    else:
        (newest / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=message + r".*\(delete the folder .*step-00000004 to resume from "
                                                          r"step-00000002\)"):
        tiny_run(tmp_path, resume=True)


def test_resume_of_a_finished_run_and_a_changed_schedule(tmp_path):
    model, history = tiny_run(tmp_path)
    again, resumed = tiny_run(tmp_path, resume=True)  # nothing left to do: the final checkpoint is loaded
    assert resumed.losses == history.losses and torch.equal(again.weight, model.weight)
    with pytest.raises(CheckpointError, match="4 steps x 1 micro-batches per step.*6 x 1"):
        tiny_run(tmp_path, steps=6, resume=True)
    with pytest.raises(ValueError, match="need a checkpoint_dir"):
        TrainConfig(steps=3, save_every=1)
