"""The lean loader: parameters never built for real before the checkpoint fills them, tensors put in
place in the requested dtype and device, tied weights still one tensor, dtype="auto" as transformers
reads it; errors that name the file's own keys, every problem at once; out-of-vocabulary ids refused
by name in every model that embeds ids."""
import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import weights_convert
from minivlm.parity import all_cases
from minivlm.parity.harness import build_seeded
from weights_convert import CheckpointError, MissingWeightsError, ShapeMismatchError
from weights_convert.empty import parameters_on_meta
from weights_convert.engine import KeyMap, Rule, file_spellings
from weights_convert.load import resolve_dtype

TINY_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=30,
                patch_size=6)
TINY_LLAMA = dict(vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=True)


def save(model, folder, **kwargs):
    model.save_pretrained(folder, **kwargs)
    return folder


@pytest.fixture(scope="module")
def vit():
    return build_seeded(lambda: transformers.ViTModel(transformers.ViTConfig(**TINY_VIT)))


@pytest.fixture(scope="module")
def llama():
    return build_seeded(lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA)))


def edit(folder, change):
    path = folder / "model.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


# Building without weights ------------------------------------------------------------------------

def test_parameters_are_built_on_meta_and_ties_kept(llama):
    from weights_convert.families.llama import llama_config
    from minivlm.text.llama import LlamaForCausalLM
    calls = []
    original = torch.nn.init.normal_
    with parameters_on_meta():
        model = LlamaForCausalLM(llama_config(llama.config.to_dict()))
        torch.nn.init.normal_(torch.empty(2))  # a real tensor is still initialised inside
        calls.append(torch.nn.init.normal_ is not original)
    assert calls == [True] and torch.nn.init.normal_ is original  # restored on exit
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.model.rope.inv_freq.device.type == "cpu"  # what __init__ computes stays real


@torch.no_grad()
def test_tied_weights_stay_one_tensor_and_match(llama, tmp_path):
    ours = weights_convert.load_pretrained(save(llama, tmp_path), dtype=torch.float32)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert len(list(ours.parameters())) == len(list(llama.parameters()))
    ids = torch.tensor([[1, 5, 9, 60, 2]])
    assert (ours(input_ids=ids).logits - llama(input_ids=ids).logits).abs().max() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@torch.no_grad()
def test_cast_while_loading_equals_casting_the_reference(vit, tmp_path, dtype):
    ours = weights_convert.load_pretrained(save(vit, tmp_path), dtype=dtype)
    theirs = {k: v.to(dtype) for k, v in load_file(str(tmp_path / "model.safetensors")).items()}
    assert ours.cls_token.dtype == dtype
    assert torch.equal(ours.encoder.layers[1].attn.k_proj.weight, theirs["encoder.layer.1.attention.attention.key.weight"])
    assert torch.equal(ours.cls_token, theirs["embeddings.cls_token"][0, 0])


def test_device_meta_goes_through_the_copy_path(llama, tmp_path):
    """Any device but the CPU reads each tensor and copies it over (device="cuda" takes this path):
    on meta, every weight lands there, ties kept, nothing left behind on the CPU."""
    ours = weights_convert.load_pretrained(save(llama, tmp_path), dtype=torch.bfloat16, device="meta")
    assert {(p.device.type, p.dtype) for p in ours.parameters()} == {("meta", torch.bfloat16)}
    assert ours.lm_head.weight is ours.model.embed_tokens.weight


def test_stored_bf16_weights_are_the_files_own_memory_with_mmap(llama, tmp_path):
    """mmap=True, same dtype on the CPU: no copy, the parameter is the memory-mapped file (copy-on-write).
    By default each weight is read into its own memory instead, with the same values."""
    save(llama.to(torch.bfloat16), tmp_path)
    llama.float()
    read = weights_convert.load_pretrained(tmp_path, dtype=torch.bfloat16)
    ours = weights_convert.load_pretrained(tmp_path, dtype=torch.bfloat16, mmap=True)
    reference = load_file(str(tmp_path / "model.safetensors"))
    q = read.model.layers[0].attn.q_proj.weight
    assert torch.equal(q, reference["model.layers.0.self_attn.q_proj.weight"])
    assert q.untyped_storage().nbytes() == q.numel() * 2  # its own bytes, not the file's
    w = ours.model.layers[0].attn.q_proj.weight
    assert torch.equal(w, reference["model.layers.0.self_attn.q_proj.weight"])
    assert w.untyped_storage().nbytes() == (tmp_path / "model.safetensors").stat().st_size
    w.data.mul_(2)  # private: the file is untouched
    assert torch.equal(load_file(str(tmp_path / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"],
                       reference["model.layers.0.self_attn.q_proj.weight"])


# dtype="auto" ------------------------------------------------------------------------------------

def test_auto_dtype_reads_the_config_then_the_stored_tensors(vit, tmp_path):
    save(vit.to(torch.bfloat16), tmp_path)
    vit.float()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert weights_convert.load_pretrained(tmp_path).cls_token.dtype == torch.bfloat16  # the default is "auto"
    for written in ({"torch_dtype": "float16"}, {"dtype": "float16"}):  # older files: torch_dtype
        (tmp_path / "config.json").write_text(json.dumps({**{k: v for k, v in config.items() if k != "dtype"},
                                                          **written}))
        assert weights_convert.load_pretrained(tmp_path, dtype="auto").cls_token.dtype == torch.float16
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "dtype"}))
    assert weights_convert.load_pretrained(tmp_path).cls_token.dtype == torch.bfloat16  # the stored tensors'
    assert weights_convert.load_pretrained(tmp_path, dtype="float32").cls_token.dtype == torch.float32


def test_auto_dtype_agrees_with_transformers(vit, tmp_path):
    save(vit.to(torch.float16), tmp_path)
    vit.float()
    theirs = transformers.ViTModel.from_pretrained(tmp_path)  # transformers 5: dtype="auto" by default
    assert weights_convert.load_pretrained(tmp_path).cls_token.dtype == theirs.dtype == torch.float16


def test_auto_dtype_of_a_mixed_file_is_the_one_transformers_picks(vit, tmp_path):
    """No dtype in config.json, fp32 matrices and a bf16 cls_token: transformers takes the first floating
    tensor in sorted key order (embeddings.cls_token), not the first in the file's header (fp32 first)."""
    save(vit, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "dtype"}))
    edit(tmp_path, lambda s: s.update({"embeddings.cls_token": s["embeddings.cls_token"].to(torch.bfloat16)}))
    theirs = transformers.ViTModel.from_pretrained(tmp_path)
    assert weights_convert.load_pretrained(tmp_path).cls_token.dtype == theirs.dtype == torch.bfloat16


def test_a_dtype_that_is_not_one_is_refused():
    with pytest.raises(ValueError, match=r"dtype='fp17'.*torch dtype, its name.*'auto'"):
        resolve_dtype("fp17", {}, {})


# Errors that name the file's keys ----------------------------------------------------------------

def test_missing_tensor_is_named_as_the_file_spells_it(vit, tmp_path):
    edit(save(vit, tmp_path), lambda s: s.pop("encoder.layer.1.attention.attention.key.weight"))
    with pytest.raises(MissingWeightsError) as e:
        weights_convert.load_pretrained(tmp_path)
    assert "encoder.layer.1.attention.attention.key.weight   (minivlm: encoder.layers.1.attn.k_proj.weight)" \
        in str(e.value)


def test_every_spelling_the_map_accepts_is_named():
    keymap = (KeyMap([Rule("tower.x.{i}.qkv.{wb}", ("t.{i}.q.{wb}", "t.{i}.k.{wb}", "t.{i}.v.{wb}"))])
              + KeyMap([Rule("model.tower.x.{i}.qkv.{wb}", ("t.{i}.q.{wb}", "t.{i}.k.{wb}", "t.{i}.v.{wb}"))]))
    assert file_spellings(keymap, "t.3.k.bias") == ["tower.x.3.qkv.bias (fused, split by the map)",
                                                    "model.tower.x.3.qkv.bias (fused, split by the map)"]
    assert file_spellings(keymap, "elsewhere") == []


def test_every_problem_is_reported_at_once(vit, tmp_path):
    def break_it(state):
        state.pop("layernorm.bias")
        state["encoder.layer.0.extra.weight"] = torch.zeros(3)
        state["encoder.layer.0.output.dense.weight"] = torch.zeros(32, 36)
        state["pooler.dense.bias"] = torch.zeros(33)
    edit(save(vit, tmp_path), break_it)
    with pytest.raises(ShapeMismatchError) as e:  # the class of the first kind; the message has them all
        weights_convert.load_pretrained(tmp_path)
    message = str(e.value)
    assert "2 tensor(s) in the checkpoint" in message and "needs (32, 37)" in message and "needs (32,)" in message
    assert "encoder.layer.0.extra.weight (3,) in model.safetensors" in message
    assert "layernorm.bias   (minivlm: final_norm.bias)" in message


def test_problems_are_found_before_any_data_is_read(vit, tmp_path):
    """A wrong shape is refused from the header alone: a file whose bytes are cut off still says so."""
    edit(save(vit, tmp_path), lambda s: s.update({"layernorm.weight": torch.zeros(31)}))
    with pytest.raises(ShapeMismatchError, match=r"layernorm\.weight in model\.safetensors has shape \(31,\)"):
        weights_convert.load_pretrained(tmp_path)


def test_truncated_safetensors_is_named(vit, tmp_path):
    path = save(vit, tmp_path) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        weights_convert.load_pretrained(tmp_path)


# Token ids outside the vocabulary ----------------------------------------------------------------

ID_CASES = {"llama": "LlamaForCausalLM", "clip": "CLIPModel", "siglip": "SiglipModel",
            "blip": "BlipForConditionalGeneration", "llava": "LlavaForConditionalGeneration",
            "llava_next": "LlavaNextForConditionalGeneration", "mistral": "MistralForCausalLM",
            "qwen2": "Qwen2ForCausalLM", "opt": "OPTForCausalLM", "blip2": "Blip2ForConditionalGeneration",
            "llava_onevision": "LlavaOnevisionForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration"}


def first_case(family, arch):
    return next(c for c in all_cases([family]) if type(build_seeded(c.build_reference)).__name__ == arch)


@pytest.mark.parametrize("family", ID_CASES)
def test_out_of_vocabulary_ids_are_refused_by_name(family, tmp_path):
    case = first_case(family, ID_CASES[family])
    reference = build_seeded(case.build_reference)
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(0))
    ours = weights_convert.load_pretrained(save(reference, tmp_path), dtype=torch.float32)
    config = reference.config
    vocab = getattr(config, "text_config", config).vocab_size
    ids = inputs["input_ids"].clone()
    ids[0, -1] = vocab  # one past the table, on a text token
    with pytest.raises(ValueError, match=rf"token id {vocab} is outside the vocabulary of {vocab} ids"):
        ours(**{**inputs, "input_ids": ids})


# parity --checkpoint at real size: one model at a time -----------------------------------------------

@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() meets torch's deprecated aliases
def test_parity_checkpoint_holds_one_model_at_a_time(llama, tmp_path, monkeypatch, capsys):
    """On a sharded bf16 folder: the reference is loaded once (in bf16) and gone before ours loads;
    the output reports the peak memory."""
    import gc

    from minivlm.cli import main
    save(llama.to(torch.bfloat16), tmp_path, max_shard_size="20KB")
    llama.float()
    assert (tmp_path / "model.safetensors.index.json").is_file()
    references, real_load = [], weights_convert.load_pretrained
    from_pretrained = transformers.LlamaForCausalLM.from_pretrained.__func__

    def load_reference(cls, *args, **kwargs):
        references.append(kwargs.get("dtype"))
        return from_pretrained(cls, *args, **kwargs)

    def load_ours(*args, **kwargs):
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, transformers.PreTrainedModel)
                 and o.config._name_or_path == str(tmp_path)]
        assert not alive, "the reference is still in memory when minivlm's model loads"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(transformers.LlamaForCausalLM, "from_pretrained", classmethod(load_reference))
    monkeypatch.setattr(weights_convert, "load_pretrained", load_ours)
    with pytest.raises(SystemExit) as exit_:
        main(["parity", "--checkpoint", str(tmp_path), "--dtype", "bfloat16", "--threads", "1"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0, out
    assert references == [torch.bfloat16]
    assert "host peak" in out and "weights on disk" in out

