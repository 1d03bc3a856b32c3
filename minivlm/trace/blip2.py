"""Follow one image + prompt through BLIP-2 or InstructBLIP.

    image file -> RGB -> pixel_values -> patch embedding -> encoder layers -> image embeds
      [InstructBLIP: instruction tokens for the Q-Former]
      -> Q-Former: Q learned queries cross-attend to the image (and read the instruction)
      -> language projection: Q soft-prompt vectors at the LM's width
      -> prompt tokens (Q <image> placeholders, then the text) -> merged embeddings -> LM logits
      -> generated tokens

Both sides make the same calls: the tower's embeddings and hidden states, the model's forward (its
Q-Former output read from the result), the language projection on those queries, a hook on the
language model for the merged embeddings, greedy generate. The default is a seeded tiny model
(OPT for BLIP-2, LLaMA for InstructBLIP) on the character tokenizer.
"""
import json
from pathlib import Path

import torch

from ..processing.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..processing.tiny_tokenizer import added_token_ids, write_tiny_tokenizer
from .capture import input_of
from .families import Sample
from .inputs import hf_pixel_values, hf_tokenizer, image_stages, tokenize
from .stage import Stage, first_stop, shape, token_view

TITLE = {"blip2": "BLIP-2", "instructblip": "InstructBLIP"}
SHIPPED = {}
ARCHITECTURE = {"blip2": "Blip2ForConditionalGeneration", "instructblip": "InstructBlipForConditionalGeneration"}
DEFAULT_PROMPT = "Question: what is in the picture? Answer:"
QUERIES, SIZE = 4, 32


def write_tiny(folder, variant) -> dict:
    vocab_size = write_tiny_tokenizer(folder)
    ids = added_token_ids()
    processor = {"image_processor_type": "BlipImageProcessor", "do_resize": True, "size": {"height": SIZE, "width": SIZE},
                 "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD), "do_convert_rgb": True}
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(processor))
    common = {"vocab_size": vocab_size, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
              "pad_token_id": ids["<pad>"], "bos_token_id": 1, "eos_token_id": 2, "max_position_embeddings": 256}
    text = ({"model_type": "opt", **common, "ffn_dim": 96, "word_embed_proj_dim": 48, "init_std": 0.1}
            if variant == "blip2" else
            {"model_type": "llama", **common, "intermediate_size": 96, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
             "initializer_range": 0.1})
    qformer = {"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
               "intermediate_size": 64, "max_position_embeddings": 64, "cross_attention_frequency": 1,
               "pad_token_id": ids["<pad>"]}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": SIZE, "patch_size": 8}
    return {"architectures": [ARCHITECTURE[variant]], "model_type": "instructblip" if variant == "instructblip" else "blip-2",
            "vision_config": vision, "qformer_config": qformer, "text_config": text, "num_query_tokens": QUERIES,
            "image_token_index": ids["<image>"]}


def sample(variant, image=None, prompt=None, shipped=False) -> Sample:
    return Sample(image, None, prompt or DEFAULT_PROMPT)


def prompt_ids(tokenizer, text, image_token_id, num_query_tokens, device) -> torch.Tensor:
    """transformers 5's Blip2Processor: num_query_tokens image tokens in front of the tokenized text."""
    ids = tokenize(tokenizer, [text])["input_ids"]
    return torch.cat([torch.full((1, num_query_tokens), image_token_id), ids], 1).to(device)


@torch.no_grad()
def run_parts(model, pixel_values, ids, qformer, max_new_tokens, embed, **generate_kwargs):
    """{stage name: tensor} of either side: the same calls, HF's names; `embed` is the one that differs."""
    queries = model.config.num_query_tokens
    vision = model.vision_model(pixel_values, output_hidden_states=True)
    out = {"pixel_values": pixel_values, "patch embedding": embed(model.vision_model, pixel_values)}
    out.update({f"encoder layer {i}": h for i, h in enumerate(vision.hidden_states)})
    out["image embeds"] = vision.last_hidden_state
    if qformer:
        out["instruction tokens"] = qformer["qformer_input_ids"]
    with input_of(model.language_model) as seen:
        result = model(pixel_values=pixel_values, input_ids=ids, **qformer)
    out["Q-Former queries"] = result.qformer_outputs.last_hidden_state[:, :queries]
    out["language projection"] = model.language_projection(out["Q-Former queries"])
    out["prompt tokens"] = ids
    out["merged embeddings"] = seen["inputs_embeds"]
    out["logits"] = result.logits
    generated = model.generate(pixel_values=pixel_values, input_ids=ids, attention_mask=torch.ones_like(ids),
                               max_new_tokens=max_new_tokens, **qformer, **generate_kwargs)
    out["generated tokens"] = generated[0, ids.shape[1]:]  # generate returns the prompt and the new ids
    return out


def _inputs(tokenizer, sample, config, variant, device):
    text = config.text_config if hasattr(config, "text_config") else config.text
    ids = prompt_ids(tokenizer, sample.prompt, config.image_token_index, config.num_query_tokens, device)
    qformer = {}
    if variant == "instructblip":  # the Q-Former reads the instruction too (here: the same tokenizer)
        q = tokenize(tokenizer, [sample.prompt])
        qformer = {"qformer_input_ids": q["input_ids"].to(device), "qformer_attention_mask": q["attention_mask"].to(device)}
    return ids, qformer, text


def trace(loaded, sample, max_new_tokens=8):
    import weights_convert
    model, variant = loaded.ours, loaded.variant
    processor = weights_convert.load_image_processor(loaded.folder)
    tokenizer = weights_convert.load_tokenizer(loaded.folder)
    stages, rgb = image_stages(processor, sample.image, sample.image_name)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    pixel_values = processor(rgb)["pixel_values"].to(device, dtype)
    ids, qformer, text_cfg = _inputs(tokenizer, sample, model.config, variant, device)
    parts = run_parts(model, pixel_values, ids, qformer, max_new_tokens, lambda tower, pv: tower.embed(pv))
    q = model.config.num_query_tokens
    notes = {"pixel_values": f"resized to {pixel_values.shape[-2]}x{pixel_values.shape[-1]}, normalised",
             "patch embedding": "[CLS] + patches, + positions", "image embeds": "after the tower's final norm",
             "Q-Former queries": f"{q} learned queries: self-attention" + (" with the instruction" if qformer else "")
                                 + ", cross-attention to the image",
             "language projection": "linear: Q-Former width -> the LM's width",
             "merged embeddings": f"the {q} projected queries written at the <image> positions",
             "logits": f"{type(model.language_model).__name__}"}
    for name, value in parts.items():
        extra, ids_stage = {}, name in ("prompt tokens", "instruction tokens", "generated tokens")
        note = notes.get(name, "")
        if name == "prompt tokens":
            note = token_view(value[0], tokenizer, {model.config.image_token_index})
            extra = {"placeholder": model.config.image_token_index}
        elif name == "instruction tokens":
            note = "for the Q-Former: " + token_view(value[0], tokenizer)
        elif name == "generated tokens":
            answer = tokenizer.decode(first_stop(value.tolist(), text_cfg.eos_token_id)).strip()
            note, extra = repr(answer), {"answer": answer, "question": sample.prompt}
        stages.append(Stage(name, value, shape(value), note, extra=extra, ids=ids_stage))
    return stages


def reference(loaded, sample, max_new_tokens=8, stages=None):
    hf, variant = loaded.reference, loaded.variant
    pixel_values = hf_pixel_values("BlipImageProcessorPil", loaded.folder, sample.image, hf)
    ids, qformer, _ = _inputs(hf_tokenizer(loaded.folder), sample, hf.config, variant, hf.device)
    return run_parts(hf, pixel_values, ids, qformer, max_new_tokens, lambda tower, pv: tower.embeddings(pv),
                     do_sample=False)
