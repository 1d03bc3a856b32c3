"""`train llava --data conversations.json --images DIR --from DIR`: LLaVA-format JSON (shapes-world PNGs on
disk), starting from a LLaVA folder transformers wrote; stage 1 moves only the projector, stage 2 the
projector and the LM; bad records are named and skipped or refused; transformers loads the result."""
import argparse
import json
import shutil

import pytest
import torch

from minivlm.commands import train as train_command
from minivlm.data.shapes import ShapesWorld
from minivlm.errors import UsageError
from minivlm.trace import ADDED, tiny_vocabulary, write_tiny_tokenizer
from minivlm.train.dual_encoder import processor_config

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A tiny LLaVA saved by transformers, with the character tokenizer and a CLIP processor."""
    folder = tmp_path_factory.mktemp("start")
    vocab_size = write_tiny_tokenizer(folder)
    base = len(tiny_vocabulary())
    image_id, pad_id = base + ADDED.index("<image>"), base + ADDED.index("<pad>")
    vision = transformers.CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=2)
    text = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                    pad_token_id=pad_id, bos_token_id=1, eos_token_id=2)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                                      image_seq_length=16, vision_feature_layer=-1,
                                      vision_feature_select_strategy="default", pad_token_id=pad_id)
    torch.manual_seed(0)
    transformers.LlavaForConditionalGeneration(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(processor_config("clip", 32)))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """24 good records (one scene each, its PNG on disk) + 4 bad ones of each kind the checks know."""
    folder = tmp_path_factory.mktemp("data")
    (folder / "images").mkdir()
    records = []
    for scene in ShapesWorld(image_size=32, max_shapes=2, seed=0).scenes(24):
        name = f"scene{scene.index}.png"
        scene.image.save(folder / "images" / name)
        question, reply = scene.questions[0]
        records.append({"id": f"s{scene.index}", "image": name, "conversations": [
            {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": reply},
            {"from": "human", "value": "describe the image."}, {"from": "gpt", "value": scene.caption}]})
    ok = records[0]["conversations"]
    records += [
        {"id": "missing-file", "image": "nowhere.png", "conversations": ok},
        {"id": "no-marker", "image": "scene0.png", "conversations": [dict(ok[0], value="what is it?"), ok[1]]},
        {"id": "not-alternating", "image": "scene0.png", "conversations": [ok[0], ok[0], ok[1]]},
        {"id": "empty-reply", "image": "scene0.png", "conversations": [ok[0], dict(ok[1], value="  ")]},
    ]
    (folder / "conversations.json").write_text(json.dumps(records))
    return folder


def cli(*argv):
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return train_command.run(parser.parse_args(["llava", *argv]))


def tensors(folder):
    import weights_convert
    return weights_convert.load_pretrained(folder).state_dict()  # strict: every tensor of the file, once


def changed(before, after):
    """The model parts (vision_tower, multi_modal_projector, language_model) whose tensors moved."""
    return {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}


def test_bad_records_are_refused_by_id(start, data, tmp_path):
    with pytest.raises(ValueError) as e:
        cli("--data", str(data / "conversations.json"), "--images", str(data / "images"), "--from", str(start),
            "--out", str(tmp_path / "run"), "--steps", "1")
    message = str(e.value)
    assert message.startswith("4 of 28 record(s)")
    for rid, why in (("missing-file", "not found"), ("no-marker", "0 <image> marker(s) in its turns for 1 image"),
                     ("not-alternating", "must alternate"), ("empty-reply", "reply 0 is empty")):
        assert f"'{rid}': " in message and why in message


def test_two_stages_from_a_transformers_folder(start, data, tmp_path, capsys):
    common = ["--data", str(data / "conversations.json"), "--images", str(data / "images"), "--on-bad-record", "skip",
              "--batch-size", "4", "--template", "llava_hf"]
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    cli(*common, "--from", str(start), "--out", str(stage1), "--stage", "1", "--steps", "6", "--lr", "3e-3")
    printed = capsys.readouterr().out
    assert "skipped record 'missing-file'" in printed and "(4 bad, skipped)" in printed
    metrics = json.loads((stage1 / "metrics.json").read_text())
    assert metrics["records"] == 24 and metrics["bad_records"] == 4
    assert [r["id"] for r in json.loads((stage1 / "bad_records.json").read_text())] == [
        "missing-file", "no-marker", "not-alternating", "empty-reply"]
    before, after1 = tensors(start), tensors(stage1)
    assert changed(before, after1) == {"multi_modal_projector"}
    cli(*common, "--from", str(stage1), "--out", str(stage2), "--stage", "2", "--steps", "12", "--lr", "3e-3")
    after2 = tensors(stage2)
    assert changed(after1, after2) == {"multi_modal_projector", "language_model"}
    history = json.loads((stage2 / "history.json").read_text())["losses"]
    assert len(history) == 12 and sum(history[-3:]) < sum(history[:3])

    # transformers loads the result and computes the same loss as minivlm on a batch of the data.
    import weights_convert
    from minivlm.data.llava_dataset import LlavaCollator, LlavaDataset, load_records
    ours = weights_convert.load_pretrained(stage2)
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(stage2).eval()
    cfg = ours.config
    dataset = LlavaDataset(load_records(data / "conversations.json")[:3], weights_convert.load_tokenizer(stage2),
                           weights_convert.load_image_processor(stage2), image_folder=data / "images",
                           template="llava_hf", image_token_id=cfg.image_token_index,
                           num_image_tokens=cfg.features_per_image)
    batch = LlavaCollator(cfg.text_config.pad_token_id)([dataset[i] for i in range(3)])
    batch.pop("ids")
    with torch.no_grad():
        a, b = ours(**batch), hf(**batch)
    assert (a.logits - b.logits).abs().max() < 1e-4 and abs(a.loss.item() - b.loss.item()) < 1e-5


def test_cli_checkpoints_and_resume(start, data, tmp_path):
    """--save-every through the CLI: checkpoints per stage; --resume of the finished run trains nothing
    more and writes the same weights; --grad-accum 2 x batch 2 is the update of batch 4 (same loss)."""
    common = ["--data", str(data / "conversations.json"), "--images", str(data / "images"), "--on-bad-record", "skip",
              "--from", str(start), "--template", "llava_hf", "--steps", "4", "--lr", "3e-3"]
    run = tmp_path / "run"
    cli(*common, "--out", str(run), "--batch-size", "4", "--save-every", "2", "--keep", "1")
    folder = run / "checkpoints" / "stage-2"
    assert sorted(p.name for p in folder.iterdir()) == ["log.jsonl", "step-00000004"]
    first = (run / "model.safetensors").read_bytes()
    losses = json.loads((run / "history.json").read_text())["losses"]
    cli(*common, "--resume", str(run), "--batch-size", "4", "--save-every", "2", "--keep", "1")
    assert (run / "model.safetensors").read_bytes() == first
    cli("--resume", str(run))   # bare: the data, start, template, steps, lr, batch size ... are the run's
    assert (run / "model.safetensors").read_bytes() == first
    with pytest.raises(UsageError, match=r"--seed 3 \(the run has 0\)"):
        cli("--resume", str(run), "--seed", "3")
    with pytest.raises(UsageError, match=r"--batch-size 2 \(the run has 4\), --data .*other.json \(the run has"):
        cli("--resume", str(run), "--batch-size", "2", "--data", str(tmp_path / "other.json"))
    assert json.loads((run / "history.json").read_text())["losses"] == losses
    assert len((folder / "log.jsonl").read_text().splitlines()) == 4
    cli(*common, "--out", str(tmp_path / "accum"), "--batch-size", "2", "--grad-accum", "2")
    accum = json.loads((tmp_path / "accum" / "history.json").read_text())["losses"]
    assert accum == pytest.approx(losses, rel=1e-5)
    with pytest.raises(UsageError, match="no checkpoints folder"):
        cli(*common, "--resume", str(tmp_path / "accum"))


def test_images_are_resolved_against_the_json_folder(start, data, tmp_path, capsys):
    """Without --images: one line says where the paths were looked up, with an example; a JSON beside
    its images trains as is."""
    from minivlm.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "llava", "--data", str(data / "conversations.json"), "--from", str(start), "--steps", "1",
              "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "resolved against --images DIR (without it, the JSON's folder)" in err
    assert f"record 's0' -> {data / 'scene0.png'} is not a file" in err

    beside = tmp_path / "beside"
    shutil.copytree(data / "images", beside)
    shutil.copy(data / "conversations.json", beside / "conversations.json")
    model = tmp_path / "model"
    shutil.copytree(start, model)   # the starting model with a card and figures of its own
    (model / "README.md").write_text("# shapes-llava: the STARTING model's card\n")
    (model / "evaluation.json").write_text(json.dumps({"accuracy": 0.99}))
    cli("--data", str(beside / "conversations.json"), "--from", str(model), "--out", str(tmp_path / "run"),
        "--steps", "2", "--batch-size", "4", "--on-bad-record", "skip", "--template", "llava_hf")
    card = (tmp_path / "run" / "README.md").read_text()
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert "STARTING" not in card and "accuracy" not in evaluation
    assert "conversations.json" in card and "| steps | 2 |" in card and "| records trained on | 24 |" in card
    assert "--steps 2" in evaluation["command"] and evaluation["data"] == str(beside / "conversations.json")
    figures = evaluation["figures"]
    before, after = figures["loss on the first 24 records, before"], figures["loss on the first 24 records, after"]
    assert before > 0 and after > 0 and before != after


def test_bad_records_through_the_command_are_one_line(start, data, tmp_path, capsys):
    from minivlm.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "llava", "--data", str(data / "conversations.json"), "--images", str(data / "images"),
              "--from", str(start), "--steps", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: 4 of 28 record(s) cannot be trained on (skip them with --on-bad-record skip)")
    assert "'missing-file': image file" in err and "'empty-reply': reply 0 is empty" in err
    with pytest.raises(SystemExit):   # too few records left for one batch: says which --batch-size fits
        main(["train", "llava", "--data", str(data / "conversations.json"), "--images", str(data / "images"),
              "--from", str(start), "--on-bad-record", "skip", "--batch-size", "30", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("error: 24 record(s) to train on (4 bad, skipped), fewer than one batch of 30: "
                                    "pass --batch-size 24 or less, or more records")
