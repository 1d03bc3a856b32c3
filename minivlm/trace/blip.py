"""Follow one image through BLIP: a caption written (BlipForConditionalGeneration), or captions
matched against it (BlipForImageTextRetrieval, ITC and ITM).

    image file -> RGB -> pixel_values -> patch embedding -> encoder layers -> image embeds
      caption: -> [DEC] (+ prompt) tokens -> text decoder (causal, cross-attends to the image)
               -> logits -> generated tokens
      ITM:     -> caption tokens -> unimodal text encoder -> ITC cosine per caption
               -> image-grounded encoder (cross-attention on) -> ITM logits -> best caption

Both sides run the same calls: the tower's embeddings, the tower with hidden states, the model's
forward and generate. The defaults are the shipped shapes-blip / shapes-blip-retrieval on a scene
they never saw (their tokenizer is the word-level shapes one, with [DEC] / [ENC]); --random a
seeded tiny BLIP on the character tokenizer, whose </s> stands for BERT's [SEP].
"""
import json
from pathlib import Path

import torch

from ..processing.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..processing.tiny_tokenizer import added_token_ids, write_tiny_tokenizer
from .families import Sample
from .inputs import hf_pixel_values, hf_tokenizer, image_stages, tokenize
from .stage import Stage, shape, token_view

TITLE = {"caption": "BLIP captioning", "itm": "BLIP image-text matching"}
SHIPPED = {"caption": "shapes-blip", "itm": "shapes-blip-retrieval"}
ARCHITECTURE = {"caption": "BlipForConditionalGeneration", "itm": "BlipForImageTextRetrieval"}
CAPTIONS = ("a woman in uniform", "a cat on a sofa")
SIZE = 32


def write_tiny(folder, variant) -> dict:
    vocab_size = write_tiny_tokenizer(folder)
    processor = {"image_processor_type": "BlipImageProcessor", "do_resize": True, "size": {"height": SIZE, "width": SIZE},
                 "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD), "do_convert_rgb": True}
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(processor))
    text = {"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": 1, "sep_token_id": 2,
            "eos_token_id": 2, "pad_token_id": added_token_ids()["<pad>"]}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": SIZE, "patch_size": 8}
    return {"architectures": [ARCHITECTURE[variant]], "model_type": "blip", "text_config": text,
            "vision_config": vision, "image_text_hidden_size": 24}


def sample(variant, image=None, prompt=None, shipped=False) -> Sample:
    """caption: `prompt` is the caption's start (none: [DEC] alone); ITM: captions separated by '|'.
    The shipped models' sample: a one-shape scene from beyond their training indices; ITM weighs its
    caption against the same caption with the colour changed."""
    from ..data.shapes import COLORS
    captions = tuple(c.strip() for c in prompt.split("|")) if prompt and variant == "itm" else None
    if shipped and image is None:
        from .vision import shapes_scene
        scene, _ = shapes_scene()
        name = f"shapes-world scene {10**9 + 1} ({scene.caption}), never trained on"
        if variant == "caption":
            return Sample(scene.image, name, prompt, scene.caption)
        color = scene.shapes[0].color
        other = next(c for c in COLORS if c != color)
        return Sample(scene.image, name, captions or (scene.caption, scene.caption.replace(color, other)), scene.caption)
    return Sample(image, None, (captions or CAPTIONS) if variant == "itm" else prompt)


def tokenizers(folder):
    """(ours, transformers' or None): the shipped models speak the shapes tokenizer with [DEC]/[ENC]."""
    import weights_convert
    if (Path(folder) / "shapes_vocab.json").is_file():
        from ..data.shapes_tokenizer import BlipShapesTokenizer
        return BlipShapesTokenizer(), None
    return weights_convert.load_tokenizer(folder), hf_tokenizer(folder)


def text_ids(tokenizer, texts, sep_token_id, device) -> dict:
    """BERT's [CLS] text [SEP] rows: the character tokenizer writes no [SEP], so its </s> is appended."""
    batch = tokenize(tokenizer, list(texts))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if not bool((ids[:, -1] == sep_token_id).all()):
        ids = torch.cat([ids, torch.full_like(ids[:, :1], sep_token_id)], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@torch.no_grad()
def run_parts(model, pixel_values, variant, text, max_new_tokens, embed, **generate_kwargs):
    """{stage name: tensor} of either side: the same calls, HF's names; `embed` is the one that differs."""
    vision = model.vision_model(pixel_values, output_hidden_states=True)
    out = {"pixel_values": pixel_values, "patch embedding": embed(model.vision_model, pixel_values)}
    out.update({f"encoder layer {i}": h for i, h in enumerate(vision.hidden_states)})
    out["image embeds"] = vision.last_hidden_state
    if variant == "caption":
        start = text["input_ids"] if text else torch.full((1, 1), model.config.text_config.bos_token_id
                                                          if hasattr(model.config, "text_config") else
                                                          model.config.text.bos_token_id, device=pixel_values.device)
        out["decoder tokens"] = start
        out["logits"] = model(pixel_values=pixel_values, input_ids=start).logits
        out["generated tokens"] = model.generate(pixel_values=pixel_values, max_new_tokens=max_new_tokens,
                                                 **(text or {}), **generate_kwargs)[0]
        return out
    out["caption tokens"] = text["input_ids"]
    images = pixel_values.expand(len(text["input_ids"]), -1, -1, -1)  # one image row per caption
    plain = {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}
    itc = model(pixel_values=images, use_itm_head=False, **plain)  # itm_score: (images, captions) cosines
    out["unimodal text encoder"], out["ITC cosine"] = itc.question_embeds, itc.itm_score[:1]
    itm = model(pixel_values=images, use_itm_head=True, **{**plain, "input_ids": text.get("itm_ids", text["input_ids"])})
    out["image-grounded encoder"], out["ITM logits"] = itm.question_embeds, itm.itm_score
    out["best caption"] = itm.itm_score.softmax(-1)[:, 1].argmax(-1, keepdim=True)
    return out


def _text(tokenizer, sample, variant, config, device):
    if variant == "caption":
        return text_ids(tokenizer, [sample.prompt], config.sep_token_id, device) if sample.prompt else None
    text = text_ids(tokenizer, sample.prompt, config.sep_token_id, device)
    enc = getattr(tokenizer, "enc_token_id", None)
    if enc is not None:  # BLIP marks the image-grounded encoder's input with [ENC] in place of [CLS]
        text["itm_ids"] = torch.cat([torch.full_like(text["input_ids"][:, :1], enc), text["input_ids"][:, 1:]], 1)
    return text


def trace(loaded, sample, max_new_tokens=8):
    import weights_convert
    model, variant = loaded.ours, loaded.variant
    processor = weights_convert.load_image_processor(loaded.folder)
    stages, rgb = image_stages(processor, sample.image, sample.image_name)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    pixel_values = processor(rgb)["pixel_values"].to(device, dtype)
    tokenizer = tokenizers(loaded.folder)[0]
    parts = run_parts(model, pixel_values, variant, _text(tokenizer, sample, variant, model.config.text, device),
                      max_new_tokens, lambda tower, pv: tower.embed(pv))
    notes = {"pixel_values": f"resized to {pixel_values.shape[-2]}x{pixel_values.shape[-1]}, normalised",
             "patch embedding": "[CLS] + patches, + positions", "image embeds": "after the tower's final norm",
             "logits": "causal self-attention + cross-attention to the image embeds",
             "unimodal text encoder": "BERT, cross-attention skipped", "ITC cosine": "normalised projections",
             "image-grounded encoder": "BERT + cross-attention to the image embeds",
             "ITM logits": "[not matched, matched] from the first token"}
    for name, value in parts.items():
        ids = name in ("decoder tokens", "caption tokens", "generated tokens", "best caption")
        note = notes.get(name, "")
        extra = {}
        if name in ("decoder tokens", "caption tokens"):
            note = token_view(value[0], tokenizer)
        elif name == "generated tokens":
            answer = tokenizer.decode(value.tolist(), skip_special_tokens=True).strip()
            note, extra = repr(answer), {"answer": answer, "question": "a caption" + (
                f" continuing {sample.prompt!r}" if sample.prompt else "")}
        elif name == "best caption":
            best = sample.prompt[int(value[0])]
            note, extra = repr(best), {"answer": best, "question": f"which of {len(sample.prompt)} captions matches?"}
        stages.append(Stage(name, value, shape(value), note, extra=extra, ids=ids))
    return stages


def reference(loaded, sample, max_new_tokens=8, stages=None):
    hf, variant = loaded.reference, loaded.variant
    pixel_values = hf_pixel_values("BlipImageProcessorPil", loaded.folder, sample.image, hf)
    ours, theirs = tokenizers(loaded.folder)
    text = _text(theirs or ours, sample, variant, hf.config.text_config, hf.device)
    return run_parts(hf, pixel_values, variant, text, max_new_tokens, lambda tower, pv: tower.embeddings(pv),
                     **({"do_sample": False} if variant == "caption" else {}))
