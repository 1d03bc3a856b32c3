"""`python -m minivlm`: a user's mistake is one `error:` line and exit code 2 in every command; help
shows defaults; index never appends an image twice and leaves nothing behind when it adds nothing;
search refuses an empty query; a CLIP run resumes with its own settings and refuses contradicting
flags by name; a trained CLIP folder's tokenizer loads in minivlm and transformers."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minivlm.cli import COMMANDS, main
from minivlm.data.shapes import ShapesWorld

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *argv):
    """(exit code, stdout, stderr) of `python -m minivlm ARGV`, in this process."""
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def assert_one_line_error(code, out, err, *expected):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    for text in expected:
        assert text in lines[0], (text, lines[0])


@pytest.fixture
def gallery(tmp_path):
    folder = tmp_path / "gallery"
    folder.mkdir()
    for s in ShapesWorld(image_size=32).scenes(4, start=10**9):
        s.image.save(folder / f"scene-{s.index}.png")
    return folder


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_an_unknown_option_in_one_line(capsys, command):
    # (a command with a required argument may name that first: either way one line, pointing at its help)
    assert_one_line_error(*cli(capsys, command, "--no-such-option"), f"{command} --help")


def bad_arguments(tmp):
    """(argv, text the error line must hold): mistakes each command's run() itself refuses."""
    (tmp / "a-file.png").write_bytes(b"")
    return [
        (["index", str(tmp / "does-not-exist")], "no folder at"),
        (["index", str(tmp / "a-file.png")], "is a file"),
        (["index"], "give a folder of images"),
        (["search", "", "--index", str(tmp)], "query is empty"),
        (["search", "   ", "--index", str(tmp)], "query is empty"),
        (["search", "a red circle", "--index", str(tmp), "-k", "0"], "invalid positive integer value"),
        (["search", "a red circle", "--index", str(tmp / "none")], "no index at"),
        (["search", "--image", str(tmp / "missing.png"), "--index", str(tmp)], "no such file"),
        (["train", "clip", "--data", "mine.json"], "train clip does not read --data"),
        (["train", "siglip", "--stage", "1", "--images", "x"], "--images, --stage"),
        (["train", "blip2", "--grad-accum", "2"], "train blip2 does not read --grad-accum"),
        (["train", "clip", "--steps", "0"], "--steps must be at least 1"),
        (["train", "clip", "--resume", str(tmp / "no-run")], "no checkpoints folder"),
        (["train", "llava", "--data", str(tmp / "x.json")], "--data needs --from"),
        (["train", "nothing"], "invalid choice"),
        (["trace", "--image", str(tmp / "missing.png")], "no image file"),
        (["trace", "--random", "--checkpoint", str(tmp)], "exclude each other"),
        (["ship", "clip", "--run", str(tmp / "no-run")], "the run is incomplete"),
        (["parity", "--checkpoint", str(tmp / "missing")], "not a directory"),
        (["parity", "--family", "nope"], "invalid choice: 'nope'"),
        (["bench", "--cpu-time"], "--cpu-time needs --threads 1"),
        (["bench", "--memory", "--device", "cuda"], "runs on cpu"),
        (["notebooks", "no_such_notebook"], "no notebook"),
    ]


def test_each_command_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    seen = set()
    for argv, expected in bad_arguments(tmp_path):
        assert_one_line_error(*cli(capsys, *argv), expected)
        seen.add(argv[0])
    assert seen >= {"index", "search", "train", "trace", "ship", "parity", "bench", "notebooks"}


def test_debug_shows_the_traceback_and_a_bug_keeps_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no folder at"):
        main(["--debug", "index", str(tmp_path / "does-not-exist")])
    with pytest.raises(FileNotFoundError):
        main(["index", str(tmp_path / "does-not-exist"), "--debug"])
    from minivlm.commands import index

    def bug(args):
        raise KeyError("a bug")
    monkeypatch.setattr(index, "run", bug)
    with pytest.raises(KeyError):   # not a user's mistake: the traceback stays
        main(["index", str(tmp_path)])


def test_the_module_entry_point(tmp_path):
    """The real `python -m minivlm`: stderr holds one line, stdout nothing, exit code 2."""
    done = subprocess.run([sys.executable, "-m", "minivlm", "index", str(tmp_path / "does-not-exist")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: no folder at"), done.stderr


def test_help_lists_every_recipe_and_shows_defaults(capsys):
    from minivlm.commands.train import TRAINERS
    code, out, _ = cli(capsys, "train", "--help")
    text = " ".join(out.split())
    assert code == 0
    for recipe in TRAINERS:
        assert recipe in text
    assert "blip2" in " ".join(COMMANDS["train"].split())
    assert "clip 800" in text and "siglip 1200" in text and "llava --data 8" in text
    assert "data order (default: 0)" in text and "(default: 3)" in text   # --keep
    code, out, _ = cli(capsys, "search", "--help")
    text = " ".join(out.split())
    assert "(default: 20)" in text and "(default: 5)" in text and "image rows for a text query" in text


def test_the_stated_defaults_are_the_recipes(capsys):
    from minivlm.commands.train import DEFAULTS
    from minivlm.train import blip, blip2, dual_encoder, llava
    assert DEFAULTS["clip"] == {k: dual_encoder.RECIPE["clip"][k] for k in ("steps", "batch_size")}
    assert DEFAULTS["siglip"] == {k: dual_encoder.RECIPE["siglip"][k] for k in ("steps", "batch_size")}
    assert DEFAULTS["blip"] == {k: blip.RECIPE[k] for k in ("steps", "batch_size")}
    assert DEFAULTS["llava"] == dict(steps=llava.RECIPE["stage2_steps"], batch_size=llava.RECIPE["batch_size"])
    assert DEFAULTS["blip2"] == dict(steps=blip2.RECIPE["stage2_steps"], batch_size=blip2.RECIPE["batch_size"])


# --- index / search ------------------------------------------------------------------------------

def test_index_twice_adds_each_image_once(tmp_path, gallery, capsys):
    out = tmp_path / "idx"
    code, printed, _ = cli(capsys, "index", str(gallery), "--out", str(out))
    assert code == 0 and "4 images added, 0 skipped" in printed
    code, printed, _ = cli(capsys, "index", str(gallery), "--out", str(out))
    assert code == 0 and "0 images added, 0 skipped, 4 already in the index" in printed and "4 vectors (0 new)" in printed
    # the same folder by another spelling of its path is the same files
    code, printed, _ = cli(capsys, "index", str(gallery / ".." / "gallery"), "--out", str(out))
    assert code == 0 and "4 already in the index" in printed
    # a file whose content changed is a new image; a new file is added
    ShapesWorld(image_size=32).scenes(1, start=5)[0].image.save(next(iter(sorted(gallery.glob("*.png")))))
    ShapesWorld(image_size=32).scenes(1, start=6)[0].image.save(gallery / "new.png")
    code, printed, _ = cli(capsys, "index", str(gallery), "--out", str(out))
    assert code == 0 and "2 images added" in printed and "3 already in the index" in printed
    code, printed, err = cli(capsys, "search", "a red circle", "--index", str(out), "-k", "50")
    paths = [line.split()[-1] for line in printed.splitlines()]
    assert code == 0 and len(paths) == 6 and len(set(paths)) == 6 - 1   # the changed file: old and new vectors
    assert err.count("-k 50 is more than the 6 image rows the index holds") == 1


def test_index_leaves_no_empty_index_behind(tmp_path, gallery, capsys):
    (gallery / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "idx"
    assert_one_line_error(*cli(capsys, "index", str(gallery), "--out", str(out), "--on-error", "raise"), "broken.png")
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(*cli(capsys, "index", str(empty)), "holds no image files")
    assert list(empty.iterdir()) == []
    (empty / "only-broken.png").write_bytes(b"")
    code, out, err = cli(capsys, "index", str(empty))   # after the progress bar of the embedding pass
    assert code == 2 and "Traceback" not in err and err.splitlines()[-1].startswith("error: none of the 1 images")
    assert [p.name for p in empty.iterdir()] == ["only-broken.png"]


# --- train: resume with the run's settings, refusals by name, the tokenizer ------------------------

@pytest.fixture
def fast_clip(monkeypatch):
    """The CLIP recipe without its zero-shot evaluation (480 scenes): these tests are about the run."""
    from minivlm.train import dual_encoder
    monkeypatch.setattr(dual_encoder, "zero_shot_accuracy", lambda *a, **k: 0.5)


def test_clip_resumes_with_its_own_settings(tmp_path, capsys, fast_clip, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--steps", "4", "--batch-size", "4", "--seed", "1", "--threads", "1"]
    code, _, _ = cli(capsys, "train", "clip", *common, "--save-every", "2", "--out", "full")
    assert code == 0
    full = (tmp_path / "full" / "model.safetensors").read_bytes()
    settings = json.loads((tmp_path / "full" / "checkpoints" / "settings.json").read_text())
    assert settings["steps"] == 4 and settings["seed"] == 1 and settings["batch_size"] == 4

    # The README's bare resume, on a run killed after step 2: its steps, seed and batch size come from the run.
    code, _, _ = cli(capsys, "train", "clip", *common, "--save-every", "2", "--out", "runs/clip")
    import shutil
    shutil.rmtree(tmp_path / "runs" / "clip" / "checkpoints" / "clip" / "step-00000004")
    (tmp_path / "runs" / "clip" / "model.safetensors").unlink()
    code, out, err = cli(capsys, "train", "clip", "--resume", "runs/clip")
    assert code == 0, err
    assert "clip: resuming from step 2 of 4 (checkpoint runs/clip/checkpoints/clip/step-00000002)" in err
    assert (tmp_path / "runs" / "clip" / "model.safetensors").read_bytes() == full   # the uninterrupted run's weights
    shutil.move(tmp_path / "runs" / "clip", tmp_path / "cut")

    # Given again, the same values are accepted; contradicting ones are refused by name, all at once.
    code, _, err = cli(capsys, "train", "clip", "--resume", "cut", "--seed", "1", "--steps", "4", "--device", "cpu")
    assert code == 0, err
    code, out, err = cli(capsys, "train", "clip", "--resume", "cut", "--seed", "2", "--batch-size", "8")
    assert_one_line_error(code, out, err, "--batch-size 8 (the run has 4)", "--seed 2 (the run has 1)")
    assert_one_line_error(*cli(capsys, "train", "clip", "--resume", "cut", "--steps", "6"), "--steps 6 (the run has 4)")
    assert_one_line_error(*cli(capsys, "train", "siglip", "--resume", "cut"), "holds a `train clip` run")
    assert_one_line_error(*cli(capsys, "train", "clip", "--resume", "cut", "--out", "elsewhere"), "drop --out")

    # The folder's tokenizer: weights_convert and transformers read it, with ShapesTokenizer's ids.
    import weights_convert
    from minivlm.data.shapes_tokenizer import ShapesTokenizer
    texts = ["a red circle on the left", "what color is the shape?", "how many shapes are there?"]
    ours = weights_convert.load_tokenizer(tmp_path / "cut")
    want = ShapesTokenizer()(texts)
    got = ours(texts, padding=True, return_tensors="pt")
    assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["attention_mask"], want["attention_mask"])
    card = (tmp_path / "cut" / "README.md").read_text()
    assert "tokenizer.json" in card and "--steps 4" in card and "--seed 1" in card
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "cut")
    assert hf(texts, padding=True, return_tensors="pt")["input_ids"].tolist() == want["input_ids"].tolist()


def test_a_run_before_settings_were_kept_says_which_steps(tmp_path, capsys, fast_clip, monkeypatch):
    """A run without settings.json (written by an older minivlm): a different --steps is the
    checkpoint's refusal, in one line that names the steps to pass."""
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "train", "clip", "--steps", "2", "--batch-size", "4", "--save-every", "2", "--out", "old")[0] == 0
    (tmp_path / "old" / "checkpoints" / "settings.json").unlink()
    assert_one_line_error(*cli(capsys, "train", "clip", "--resume", "old", "--batch-size", "4"), "--steps 2")


def test_accumulation_states_the_effective_batch(tmp_path, capsys, fast_clip):
    code, out, _ = cli(capsys, "train", "clip", "--steps", "1", "--batch-size", "4", "--grad-accum", "2",
                       "--out", str(tmp_path / "run"), "--threads", "1")
    assert code == 0 and "1 rank(s) x 2 accumulation x batch 4 = 8 examples per update" in out


def test_torchrun_states_ranks_and_effective_batch(tmp_path, capsys, monkeypatch):
    """Under torchrun (two ranks, faked here: the DDP run itself is tests/test_train_scaling.py's) rank 0
    states ranks x accumulation x batch, with the recipe's batch size when none is given."""
    import types

    from minivlm.commands.train import TRAINERS
    from minivlm.train import distributed
    seen = {}
    monkeypatch.setitem(sys.modules, "fake_recipe", types.SimpleNamespace(run=lambda args: seen.update(vars(args))))
    monkeypatch.setitem(TRAINERS, "clip", "fake_recipe:run")
    monkeypatch.setattr(distributed, "init_from_env", lambda device: device)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    code, out, _ = cli(capsys, "train", "clip", "--grad-accum", "3", "--out", str(tmp_path / "run"))
    assert code == 0 and "2 rank(s) x 3 accumulation x batch 32 = 192 examples per update" in out
    assert seen["batch_size"] == 32 and seen["steps"] == 800 and seen["grad_accum"] == 3


def test_add_images_refuses_a_path_that_is_no_folder(tmp_path):
    """The library under the command: a path string is a folder or an error, never 12 'images' named
    after its characters."""
    from minivlm import pretrained
    from minivlm.retrieval import Index, load_encoder
    encoder = load_encoder(pretrained.path("shapes-clip"))
    index = Index.create(tmp_path / "idx", encoder)
    with pytest.raises(FileNotFoundError, match="no folder at"):
        index.add_images(str(tmp_path / "does-not-exist"), encoder, progress=False)
    (tmp_path / "one.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        index.add_images(tmp_path / "one.png", encoder, progress=False)
    assert len(index) == 0
