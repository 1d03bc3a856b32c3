"""`python -m minivlm chat` on the shipped shapes-llava: a question about a scene answered with the
scene's true answer, streamed; --compare finds transformers' ids equal (greedy and beams); an
interactive session over stdin; bad input is one error line and exit code 2."""
import io

import pytest
import torch

from minivlm.cli import main


def run_chat(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["chat", *argv])
    out, err = capsys.readouterr()
    return stop.value.code, out, err


@pytest.fixture(scope="module")
def known_scene(tmp_path_factory):
    """A scene never seen in training and a colour question whose true answer the model gives when
    asked through the training code's own path (train/llava.py's answer), saved as a PNG."""
    import weights_convert
    from minivlm import pretrained
    from minivlm.data.shapes import ShapesWorld
    from minivlm.train.dual_encoder import EVAL_START
    from minivlm.train.llava import answer, chat_prompt
    folder = pretrained.path("shapes-llava")
    model = weights_convert.load_pretrained(folder, dtype=torch.float32)
    tokenizer, processor = weights_convert.load_tokenizer(folder), weights_convert.load_image_processor(folder)
    world = ShapesWorld(image_size=model.config.vision_config.image_size, max_shapes=2)
    asked = [(s, q, a) for s in world.scenes(8, "train", start=EVAL_START) for q, a in s.questions
             if q.startswith("what color")]
    replies = answer(model, tokenizer, processor, [s.image for s, _, _ in asked], [chat_prompt(q) for _, q, _ in asked])
    scene, question, truth = next((s, q, a) for (s, q, a), r in zip(asked, replies) if r == a)
    path = tmp_path_factory.mktemp("chat") / "scene.png"
    scene.image.save(path)
    return str(path), question, truth


def test_answers_a_scene_right_and_equals_transformers(known_scene, capsys):
    image, question, truth = known_scene
    code, out, err = run_chat(["--image", image, "--prompt", question, "--compare"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].strip() == truth, (out, err)
    assert lines[1].startswith("transformers: ids equal")
    assert "tokens/s" in err
    code, out, _ = run_chat(["--image", image, "--prompt", question, "--compare", "--num-beams", "3",
                             "--repetition-penalty", "1.2"], capsys)
    assert code == 0 and "transformers: ids equal" in out
    # a stop string inside the answer, through the folder's SentencePiece-style tokenizer (ours) and
    # transformers' own tokenizer for its StopStringCriteria: the reply ends there, ids equal
    stop = truth[:2]
    code, out, _ = run_chat(["--image", image, "--prompt", question, "--compare", "--stop", stop], capsys)
    assert code == 0 and out.splitlines()[0].strip() == stop and "transformers: ids equal" in out, out


def test_interactive_session_reads_stdin(known_scene, capsys, monkeypatch):
    image, question, truth = known_scene
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{question}\nhow many shapes are there?\n\n"))
    code, out, err = run_chat(["--image", image, "--max-new-tokens", "12"], capsys)
    assert code == 0 and out.splitlines()[0].strip() == truth
    assert len(out.splitlines()) == 2 and err.count("tokens/s") == 2  # two turns, two replies


def test_prompt_follows_the_template_over_turns():
    """Without a chat template in the folder, the hand-written one renders the whole history, the
    image placeholders in the first user turn."""
    from minivlm.commands.chat import prompt_text
    from minivlm.processing.conversation import TEMPLATES, render

    class NoTemplate:
        chat_template, image_token = None, "<image>"
    turns = [("user", "what color is it?"), ("assistant", "red"), ("user", "and the shape?")]
    want = render(TEMPLATES["llava_hf"], [("human", "<image>\n<image>\nwhat color is it?"), ("gpt", "red"),
                                          ("human", "and the shape?")], add_generation_prompt=True).text
    assert prompt_text(NoTemplate(), "llava_hf", turns, 2, 0) == want


@pytest.mark.parametrize("argv, message", [
    (["--image", "no/such/scene.png", "--prompt", "hi"], "no/such/scene.png"),
    (["--prompt", "hi", "--num-beams", "0"], "num_beams"),
    (["--prompt", "hi", "--compare", "--do-sample"], "--compare"),
    (["--prompt", "hi", "--checkpoint", "no/such/folder"], "no/such/folder"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys):
    code, out, err = run_chat(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_shipped_folder_prompt_is_its_chat_template(known_scene):
    import weights_convert
    from minivlm import pretrained
    from minivlm.commands.chat import open_processor, prompt_text
    _, question, _ = known_scene
    processor = open_processor(pretrained.path("shapes-llava"), None)
    assert processor.chat_template  # the folder's own, read by load_processor
    turns = [("user", question), ("assistant", "red"), ("user", "how many shapes are there?")]
    assert prompt_text(processor, "llava_hf", turns, 1, 0) == (
        f"USER: <image>\n{question} ASSISTANT: red</s>USER: how many shapes are there? ASSISTANT:")
    assert isinstance(processor, type(weights_convert.load_processor(pretrained.path("shapes-llava"))))


def test_run_folder_without_processor_config(known_scene, capsys, tmp_path):
    """A training run's folder (no processor_config.json, no chat template): a LlavaProcessor from
    the model's config and the hand-written llava_hf template give the shipped folder's exact inputs
    (one turn), the true answer, and ids equal to transformers'."""
    import shutil

    import weights_convert
    from minivlm import pretrained
    from minivlm.commands.chat import model_inputs, open_processor
    image, question, truth = known_scene
    shipped = pretrained.path("shapes-llava")
    folder = tmp_path / "run"
    shutil.copytree(shipped, folder)
    (folder / "processor_config.json").unlink()
    (folder / "chat_template.jinja").unlink()
    model = weights_convert.load_pretrained(shipped, dtype=torch.float32)
    from minivlm.commands.chat import read_image
    pixels = [read_image(image)]
    a = model_inputs(open_processor(shipped, model), "llava_hf", [("user", question)], pixels, [], model, "cpu")
    b = model_inputs(open_processor(folder, model), "llava_hf", [("user", question)], pixels, [], model, "cpu")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    code, out, err = run_chat(["--checkpoint", str(folder), "--image", image, "--prompt", question, "--compare"], capsys)
    assert code == 0 and out.splitlines()[0].strip() == truth and "ids equal" in out, (out, err)


def test_template_refusal_is_one_line(capsys, tmp_path):
    """A template's own raise_exception message comes through as the one error line, exit 2."""
    import shutil

    from minivlm import pretrained
    folder = tmp_path / "strict"
    shutil.copytree(pretrained.path("shapes-llava"), folder)
    (folder / "chat_template.jinja").write_text("{{ raise_exception('this model takes one image and a question') }}")
    code, _, err = run_chat(["--checkpoint", str(folder), "--prompt", "hi"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "takes one image and a question" in err, err
