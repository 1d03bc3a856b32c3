"""Strict loading: every way a checkpoint can fail to fit is refused with a message naming the fault;
every way HF stores a model (single file, shards, .bin) loads to the same numbers."""
import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import weights_convert
from weights_convert import (CheckpointError, MissingConfigError, MissingWeightsError, ShapeMismatchError,
                             UnknownArchitectureError, UnusedWeightsError)
from weights_convert.engine import KeyMap, Rule, convert, split_in_three, squeeze_leading
from weights_convert.checkpoint import StoredTensor

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            image_size=30, patch_size=6)


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return transformers.ViTModel(transformers.ViTConfig(**TINY)).eval()


@pytest.fixture
def saved(reference, tmp_path):
    reference.save_pretrained(tmp_path)
    return tmp_path


def edit_weights(folder, edit):
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


@torch.no_grad()
def assert_same_as(model, reference):
    x = torch.randn(2, 3, 30, 30)
    assert (model(x).last_hidden_state - reference(x).last_hidden_state).abs().max() < 1e-5


def test_missing_tensor_is_named(saved):
    edit_weights(saved, lambda s: s.pop("encoder.layer.1.attention.attention.value.bias"))
    with pytest.raises(MissingWeightsError, match=r"encoder\.layers\.1\.attn\.v_proj\.bias"):
        weights_convert.load_pretrained(saved)


def test_unused_tensor_is_named_with_shape_and_file(saved):
    edit_weights(saved, lambda s: s.update({"encoder.layer.0.extra_gate.weight": torch.zeros(3, 4)}))
    with pytest.raises(UnusedWeightsError, match=r"encoder\.layer\.0\.extra_gate\.weight \(3, 4\) in model\.safetensors"):
        weights_convert.load_pretrained(saved)


def test_tensor_for_a_layer_the_model_lacks_is_unused(saved):
    # a 3-layer checkpoint with a config that says 2 layers
    edit_weights(saved, lambda s: s.update({"encoder.layer.2.layernorm_before.weight": torch.ones(32)}))
    with pytest.raises(UnusedWeightsError, match=r"encoder\.layer\.2\.layernorm_before\.weight.*does not have"):
        weights_convert.load_pretrained(saved)


def test_wrong_shape_names_key_file_and_both_shapes(saved):
    edit_weights(saved, lambda s: s.update({"encoder.layer.0.intermediate.dense.weight": torch.zeros(36, 32)}))
    with pytest.raises(ShapeMismatchError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight in model\.safetensors "
                                                 r"has shape \(36, 32\).*needs \(37, 32\)"):
        weights_convert.load_pretrained(saved)


def test_wrong_shape_through_a_transform(saved):
    edit_weights(saved, lambda s: s.update({"embeddings.cls_token": torch.zeros(2, 1, 32)}))
    with pytest.raises(ShapeMismatchError, match=r"embeddings\.cls_token \(2, 1, 32\)"):
        weights_convert.load_pretrained(saved)


def test_unknown_architecture_is_named(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnknownArchitectureError, match="'GPTNeoXForCausalLM'.*supported: .*ViTModel"):
        weights_convert.load_pretrained(saved)


def test_missing_config_json(saved):
    (saved / "config.json").unlink()
    with pytest.raises(MissingConfigError, match="no config.json in"):
        weights_convert.load_pretrained(saved)


def test_missing_weights_file_and_missing_folder(saved, tmp_path):
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights in"):
        weights_convert.load_pretrained(saved)
    with pytest.raises(MissingConfigError, match="not a directory"):
        weights_convert.load_pretrained(tmp_path / "nowhere")


def test_config_that_does_not_fit_the_weights(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["hidden_size"] = 48
    cfg["intermediate_size"] = 50
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ShapeMismatchError, match="has shape"):
        weights_convert.load_pretrained(saved)


def test_sharded_safetensors_load(reference, tmp_path):
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert_same_as(weights_convert.load_pretrained(tmp_path), reference)


def test_missing_shard_is_named(reference, tmp_path):
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    victim = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        weights_convert.load_pretrained(tmp_path)


def test_pytorch_model_bin_loads(reference, saved):
    state = load_file(str(saved / "model.safetensors"))
    (saved / "model.safetensors").unlink()
    torch.save(state, saved / "pytorch_model.bin")
    assert_same_as(weights_convert.load_pretrained(saved), reference)


def test_dtype_and_eval(saved):
    model = weights_convert.load_pretrained(saved, dtype=torch.bfloat16)
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model = weights_convert.load_pretrained(saved, dtype="float16")
    assert {p.dtype for p in model.parameters()} == {torch.float16}


# The engine on its own -----------------------------------------------------------------------------

def stored(**tensors):
    return {k.replace("__", "."): StoredTensor(v, "f.safetensors") for k, v in tensors.items()}


def test_templates_skips_tied_and_split():
    keymap = KeyMap(
        rules=[Rule("layer.{i}.qkv.{wb}", ("blocks.{i}.q.{wb}", "blocks.{i}.k.{wb}", "blocks.{i}.v.{wb}"),
                    split_in_three),
               Rule("emb", "embed.weight", squeeze_leading(1))],
        skip=["buffers.{name}"], tied={"head.weight": "embed.weight"})
    expected = {f"blocks.0.{p}.{wb}": torch.zeros(2, 4) if wb == "weight" else torch.zeros(2)
                for p in "qkv" for wb in ("weight", "bias")}
    expected.update({"embed.weight": torch.zeros(5, 4), "head.weight": torch.zeros(5, 4)})
    qkv_w, qkv_b, emb = torch.randn(6, 4), torch.randn(6), torch.randn(1, 5, 4)
    out = convert({"layer.0.qkv.weight": StoredTensor(qkv_w, "a"), "layer.0.qkv.bias": StoredTensor(qkv_b, "a"),
                   "emb": StoredTensor(emb, "a"), "buffers.position_ids": StoredTensor(torch.arange(3), "a")},
                  keymap, expected)
    assert torch.equal(out["blocks.0.k.weight"], qkv_w[2:4]) and torch.equal(out["blocks.0.v.bias"], qkv_b[4:])
    assert torch.equal(out["head.weight"], emb[0]) and out["head.weight"] is out["embed.weight"]


def test_placeholders_match_whole_names_only():
    keymap = KeyMap([Rule("a.{i}.w", "b.{i}.w")])
    assert keymap.match("a.12.w")[1] == {"i": "12"}
    assert keymap.match("a.x.w") is None and keymap.match("a.1.w.extra") is None and keymap.match("za.1.w") is None


def test_prefixed_keymap():
    keymap = KeyMap([Rule("x.{wb}", "y.{wb}")], skip=["pos"], tied={"h": "y.weight"}).prefixed("vision.", "tower.")
    assert keymap.match("vision.x.bias")[0].model == "tower.y.{wb}"
    assert keymap.skipped("vision.pos") and not keymap.skipped("pos")
    assert keymap.tied == {"tower.h": "tower.y.weight"}


def test_a_model_key_filled_twice_is_refused():
    keymap = KeyMap([Rule("a", "w"), Rule("b", "w")])
    with pytest.raises(CheckpointError, match="filled twice"):
        convert({"a": StoredTensor(torch.zeros(2), "f"), "b": StoredTensor(torch.zeros(2), "f")}, keymap,
                {"w": torch.zeros(2)})


def test_the_same_tensor_stored_in_two_shards_is_refused(reference, tmp_path):
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    first = load_file(str(shards[0]))
    second = load_file(str(shards[1]))
    key = next(iter(first))
    second[key] = first[key]
    save_file(second, str(shards[1]))
    with pytest.raises(CheckpointError, match="stored twice"):
        weights_convert.load_pretrained(tmp_path)
