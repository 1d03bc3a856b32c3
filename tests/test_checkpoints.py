"""`python -m minivlm parity --checkpoint DIR` on model folders: the model, its image processor and
its tokenizer against transformers.

With MINIVLM_CHECKPOINTS pointing at a folder of local HF snapshots (a hub cache works too), every
model folder under it is checked (tests marked `checkpoints`). Without it those skip with the
reason, and the same path runs on folders saved here from one tiny reference per architecture.
"""
import os
import pytest
import torch

from minivlm.cli import main
from minivlm.parity import all_cases, assert_parity
from minivlm.parity.checkpoint import (check_image_processor, check_processor, check_tokenizer, checkpoint_case,
                                      model_folders)
from minivlm.parity.harness import build_seeded
from weights_convert.errors import CheckpointError

ROOT = os.environ.get("MINIVLM_CHECKPOINTS")
REAL = model_folders(ROOT) if ROOT else []


def parity(capsys, *argv):
    """(exit code, stdout + stderr) of `python -m minivlm parity ARGV`."""
    with pytest.raises(SystemExit) as exit_:
        main(["parity", *argv])
    captured = capsys.readouterr()
    return exit_.value.code, captured.out + captured.err


def _judge(rows):
    bad = [f"{case} {field}: {value}" for case, field, value, ok in rows if not ok]
    assert not bad, "; ".join(bad)


@pytest.mark.checkpoints
@pytest.mark.parametrize("folder", REAL or [None], ids=lambda f: f.name if f else "none")
def test_real_checkpoint_model(folder, checkpoints_dir):
    if folder is None:
        pytest.fail(f"MINIVLM_CHECKPOINTS={checkpoints_dir}: no folder with a config.json naming an architecture")
    torch.set_num_threads(os.cpu_count() or 1)  # real models: use the cores
    try:
        assert_parity(checkpoint_case(folder))
    finally:
        torch.set_num_threads(1)


@pytest.mark.checkpoints
@pytest.mark.parametrize("folder", REAL or [None], ids=lambda f: f.name if f else "none")
def test_real_checkpoint_processor_and_tokenizer(folder, checkpoints_dir):
    if folder is None:
        pytest.fail(f"MINIVLM_CHECKPOINTS={checkpoints_dir}: no model folder found")
    _judge(check_image_processor(folder))
    try:
        rows = check_tokenizer(folder)
    except CheckpointError as e:
        pytest.skip(f"tokenizer not implemented in minivlm: {e}")
    _judge(rows)
    try:
        _judge(check_processor(folder))
    except ImportError as e:
        pytest.skip(f"transformers cannot build this folder's processor here: {e}")


def one_reference_per_architecture():
    """{architecture: the first parity case building it}, over every family."""
    seen = {}
    for case in all_cases():
        seen.setdefault(type(case.build_reference()).__name__, case)
    return seen


# Built once: finding each case's architecture constructs every tiny reference.
BY_ARCHITECTURE = one_reference_per_architecture()


@pytest.fixture(scope="module")
def saved_tree(tmp_path_factory):
    """A tree like a user's: one folder per architecture, and the trace's tiny LLaVA (with tokenizer
    and processor files) inside a hub-cache layout."""
    from minivlm.trace import build_default
    root = tmp_path_factory.mktemp("snapshots")
    for arch, case in BY_ARCHITECTURE.items():
        build_seeded(case.build_reference).save_pretrained(root / arch)
    build_default(root / "models--tiny--llava" / "snapshots" / "0123abc")
    return root


def test_model_folders_finds_every_snapshot(saved_tree):
    found = {f.relative_to(saved_tree).as_posix() for f in model_folders(saved_tree)}
    assert found == set(BY_ARCHITECTURE) | {"models--tiny--llava/snapshots/0123abc"}


@pytest.mark.parametrize("arch", sorted(BY_ARCHITECTURE))
def test_parity_checkpoint_command(arch, saved_tree, capsys):
    code, out = parity(capsys, "--checkpoint", str(saved_tree / arch), "--threads", "1")
    assert code == 0, out
    assert f"{arch} ({arch})" in out and " 0 over tolerance" in out


def test_parity_checkpoint_with_processor_and_tokenizer(saved_tree, capsys):
    folder = saved_tree / "models--tiny--llava" / "snapshots" / "0123abc"
    code, out = parity(capsys, "--checkpoint", str(folder), "--threads", "1")
    assert code == 0, out
    for row in ("greedy ids", "photo pixel_values", "odd RGBA pixel_values", "ids of 5 texts", "decode"):
        assert row in out, out


def test_parity_checkpoint_fails_on_a_conversion_bug(saved_tree, capsys, monkeypatch):
    """The command can fail: a converter that swaps two heads' query rows (a classic bug) is caught."""
    import weights_convert
    real_load = weights_convert.load_pretrained

    def buggy_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        q = model.model.layers[0].attn.q_proj.weight                  # (heads * head_dim, D)
        head = model.config.head_dim
        with torch.no_grad():
            q[:2 * head] = torch.cat([q[head:2 * head], q[:head]]).clone()
        return model

    monkeypatch.setattr(weights_convert, "load_pretrained", buggy_load)
    code, out = parity(capsys, "--checkpoint", str(saved_tree / "LlamaForCausalLM"), "--threads", "1")
    assert code == 1 and "FAIL" in out, out


def test_parity_checkpoint_bad_folder_is_a_clear_error(tmp_path, capsys):
    code, out = parity(capsys, "--checkpoint", str(tmp_path / "missing"))
    assert code == 2 and "not a directory" in out
    (tmp_path / "empty").mkdir()
    code, out = parity(capsys, "--checkpoint", str(tmp_path / "empty"))
    assert code == 2 and "config.json" in out
