"""Sharded checkpoints (train/dcp_checkpoint.py) under --strategy fsdp: a 2-rank run SIGKILLed mid-run
resumes to the same bits; a checkpoint written by 2 ranks resumes on 1 and one written by 1 on 2.

Across rank counts the run is the same sequence of updates on the same batches (grad_accum x ranks
is kept), but the gradient sums are reduced in another order: losses agree to rel 1e-5 and the
weights to 1e-4, the tolerances of tests/test_fsdp.py and test_train_scaling.py (measured there)."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minivlm.train import checkpointing
from test_train_scaling import PARAM_TOL, free_port

SCRIPT = Path(__file__).with_name("fsdp_resume_script.py")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # four 2-process launches


def start(out, ranks, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                 "--master_port", str(free_port())] if ranks > 1 else [sys.executable])
    # its own session, so the test can SIGKILL torchrun and its workers together
    return subprocess.Popen([*launcher, str(SCRIPT), str(out), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)


def finish(proc):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out.split()[1::2]


def final(folder):
    return torch.load(Path(folder) / "final.pt")


def resumed_from(source, step, out):
    """A copy of run `source` whose newest checkpoint is `step` (the later ones deleted)."""
    shutil.copytree(Path(source) / "checkpoints", Path(out) / "checkpoints")
    folder = Path(out) / "checkpoints" / "train"
    for p in checkpointing.checkpoints(folder):
        if int(p.name.split("-")[1]) > step:
            shutil.rmtree(p)
    return out


def assert_close(run, ref):
    assert run["losses"] == pytest.approx(ref["losses"], rel=1e-5, abs=0)
    for name, tensor in ref["state"].items():
        assert (run["state"][name] - tensor).abs().max() < PARAM_TOL, name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp_resume")
    two, one = start(tmp / "two", 2), start(tmp / "one", 1, "--grad-accum", "2")
    assert finish(two) == [str(s) for s in range(1, 7)] and finish(one) == [str(s) for s in range(1, 7)]
    return tmp


def test_the_checkpoint_is_sharded_and_pickle_free(runs):
    path = checkpointing.latest(runs / "two" / "checkpoints" / "train")
    manifest = checkpointing.verify(path)
    assert manifest["world_size"] == 2 and manifest["format"] == "dcp"
    assert {"state/__0_0.distcp", "state/__1_0.distcp", "state/.metadata", "train_state.json",
            "rng-rank0.json", "rng-rank1.json"} <= set(manifest["files"])
    assert not list(path.rglob("*.pt"))
    json.loads((path / "train_state.json").read_text())  # plain JSON


def test_sigkill_and_resume_on_two_ranks_is_bit_exact(runs):
    killed = start(runs / "killed", 2, "--pause")
    for line in killed.stdout:
        if line.strip() == "step 3":  # checkpoint 2 is written, step 4 not yet taken
            for pid in (runs / "killed" / "pids").iterdir():  # the workers first, then torchrun
                os.kill(int(pid.read_text()), signal.SIGKILL)
            os.killpg(killed.pid, signal.SIGKILL)
            break
    killed.wait(timeout=60)
    shutil.rmtree(runs / "killed" / "pids")
    folder = runs / "killed" / "checkpoints" / "train"
    assert [p.name for p in checkpointing.checkpoints(folder)] == ["step-00000002"]
    assert finish(start(runs / "killed", 2)) == ["3", "4", "5", "6"]
    run, ref = final(runs / "killed"), final(runs / "two")
    assert run["losses"] == ref["losses"]
    for name, tensor in ref["state"].items():
        assert torch.equal(run["state"][name], tensor), name  # bitwise: same ranks, one thread each


def test_two_ranks_resume_on_one(runs):
    out = resumed_from(runs / "two", 2, runs / "two_to_one")
    assert finish(start(out, 1, "--grad-accum", "2")) == ["3", "4", "5", "6"]
    assert_close(final(out), final(runs / "two"))


def test_one_rank_resumes_on_two(runs):
    out = resumed_from(runs / "one", 4, runs / "one_to_two")
    assert finish(start(out, 2)) == ["5", "6"]
    assert_close(final(out), final(runs / "one"))
    # and 2 ranks -> 1 process with the same accumulation is the same curve as 1 process all along
    assert_close(final(runs / "two"), final(runs / "one"))
