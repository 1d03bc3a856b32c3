"""LoRA (minivlm/adapters/lora.py, train/lora.py): adapters on the fly equal the merged model; a LoRA
run on a transformers-written LLaVA saves a PEFT folder that load_pretrained(adapter=...) applies, and
--merge a full folder that transformers loads with the same logits; where peft is installed, peft
loads our adapter folder onto the transformers model with the same logits too."""
import json

import pytest
import torch
from torch import nn

import weights_convert
from minivlm.adapters import lora
from minivlm.train.lora import apply_lora
from test_llava_json_train import cli, data, start  # noqa: F401  (fixtures: a transformers LLaVA, records)

transformers = pytest.importorskip("transformers")
TOL = 1e-5  # fp32 CPU: the merged weight is W + s B A rounded once, on the fly it is W x + s B (A x)


def inputs(folder, seed=0):
    """One prompt: BOS, the 16 <image> tokens of a 32 x 32 image, 10 text ids; a random image."""
    config = json.loads((folder / "config.json").read_text())
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, 60, (10,), generator=g)
    ids = torch.cat([torch.tensor([1]), torch.full((16,), config["image_token_index"]), text])[None]
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(1, 3, 32, 32, generator=g))


def test_lora_linear_starts_as_its_base_and_merges_to_the_same_function():
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    x = torch.randn(5, 12)
    expected = base(x)
    layer = lora.LoraLinear(base, rank=3, alpha=6.0)
    assert torch.equal(layer(x), expected)  # B = 0: the adapted model starts as the base model
    nn.init.normal_(layer.lora_B.weight)
    by_hand = expected + 2.0 * x @ layer.lora_A.weight.T @ layer.lora_B.weight.T  # alpha / r = 2
    on_the_fly = layer(x)
    assert (on_the_fly - by_hand).abs().max() < TOL and (on_the_fly - expected).abs().max() > 0.1
    assert (layer.merged()(x) - on_the_fly).abs().max() < TOL


def test_unknown_target_is_refused_by_name(start):  # noqa: F811
    model = weights_convert.load_pretrained(start)
    with pytest.raises(ValueError, match=r"\['qproj'\] name no Linear .* called \['down_proj'"):
        apply_lora(model, 4, targets=("q_proj", "qproj"))


@pytest.fixture(scope="module")
def lora_runs(start, data, tmp_path_factory):  # noqa: F811
    """The same 3-step LoRA run twice: saved as an adapter folder, and --merge'd."""
    out = tmp_path_factory.mktemp("lora")
    common = ["--data", str(data / "conversations.json"), "--images", str(data / "images"), "--from", str(start),
              "--stage", "2", "--steps", "3", "--lr", "1e-2", "--batch-size", "4", "--on-bad-record", "skip",
              "--lora-rank", "4", "--lora-alpha", "8", "--lora-targets", "q_proj,v_proj,down_proj"]
    cli(*common, "--out", str(out / "adapter"))
    cli(*common, "--out", str(out / "merged"), "--merge")
    return out / "adapter", out / "merged"


def test_adapter_folder_is_peft_shaped(lora_runs, start):  # noqa: F811
    adapter, merged = lora_runs
    assert not (adapter / "model.safetensors").exists() and (merged / "model.safetensors").exists()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 8.0)
    assert config["modules_to_save"] == ["multi_modal_projector"]
    from safetensors import safe_open
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    # transformers 5's module names under PEFT's prefix; 1 layer x 3 targets x (A, B) + the projector's 4
    assert "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.language_model.layers.0.mlp.down_proj.lora_B.weight" in keys
    assert "base_model.model.model.multi_modal_projector.linear_1.weight" in keys and len(keys) == 6 + 4


def test_merged_equals_on_the_fly_and_transformers(lora_runs, start):  # noqa: F811
    adapter, merged = lora_runs
    x = inputs(start)
    base = weights_convert.load_pretrained(start, dtype=torch.float32)
    on_the_fly = weights_convert.load_pretrained(start, dtype=torch.float32, adapter=adapter)
    assert len(lora.adapted(on_the_fly)) == 3
    with torch.no_grad():
        ours = on_the_fly(**x).logits
        assert (ours - base(**x).logits).abs().max() > 1e-3  # the run trained something
        assert (weights_convert.load_pretrained(merged, dtype=torch.float32)(**x).logits - ours).abs().max() < TOL
        assert (lora.merge(on_the_fly)(**x).logits - ours).abs().max() < TOL
        hf = transformers.LlavaForConditionalGeneration.from_pretrained(merged, dtype=torch.float32).eval()
        assert (hf(**x).logits - ours).abs().max() < 1e-4


def test_peft_loads_our_adapter_onto_transformers(lora_runs, start):  # noqa: F811
    peft = pytest.importorskip("peft", reason="peft is not installed (pip install peft to run this check)")
    adapter, _ = lora_runs
    x = inputs(start, seed=1)
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(start, dtype=torch.float32).eval()
    hf_lora = peft.PeftModel.from_pretrained(hf, adapter).eval()
    ours = weights_convert.load_pretrained(start, dtype=torch.float32, adapter=adapter)
    with torch.no_grad():
        assert (hf_lora(**x).logits - ours(**x).logits).abs().max() < 1e-4
