"""Follow one image through a vision tower: ViT (classification), CLIP and SigLIP (image against
captions).

    image file -> RGB -> pixel_values -> patch embedding -> encoder layers -> pooled
      ViT:          -> [CLS] after the final norm -> classifier logits -> predicted class
      CLIP/SigLIP:  -> image embedding;  captions -> caption tokens -> text encoder -> text
                    embedding;  -> logits_per_image (scaled cosines, + SigLIP's bias) -> best caption

Both sides run the same parts: the tower's embeddings, the tower with its hidden states, the
model's feature getters and forward. CLIP's default is the shipped shapes-clip (a never-seen scene
against every "colour shape" name); ViT and SigLIP build a seeded tiny model.
"""
import json
from pathlib import Path

import torch

from ..processing.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..processing.tiny_tokenizer import added_token_ids, write_tiny_tokenizer
from .families import Sample
from .inputs import hf_pixel_values, hf_tokenizer, image_stages, tokenize
from .stage import Stage, shape, token_view

TITLE = {"vit": "ViT", "clip": "CLIP", "siglip": "SigLIP"}
SHIPPED = {"clip": "shapes-clip"}
ARCHITECTURE = {"vit": "ViTForImageClassification", "clip": "CLIPModel", "siglip": "SiglipModel"}
CAPTIONS = ("a photo of a woman", "a photo of a cat", "a diagram")
LABELS = ("woman", "cat", "diagram", "ship", "tree")
SIZE = 32


def tiny_config(vocab_size, variant) -> dict:
    tower = {"image_size": SIZE, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 2, "num_attention_heads": 2}
    if variant == "vit":
        return {"architectures": [ARCHITECTURE[variant]], "model_type": "vit", **tower,
                "id2label": dict(enumerate(LABELS)), "label2id": {v: k for k, v in enumerate(LABELS)}}
    text = {"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": 1, "eos_token_id": 2,
            "pad_token_id": added_token_ids()["<pad>"]}
    return {"architectures": [ARCHITECTURE[variant]], "model_type": variant, "vision_config": tower,
            "text_config": text, **({"projection_dim": 24} if variant == "clip" else {})}


def write_tiny(folder, variant) -> dict:
    config = tiny_config(write_tiny_tokenizer(folder), variant)
    kind = {"vit": "ViTImageProcessor", "clip": "CLIPImageProcessor", "siglip": "SiglipImageProcessor"}[variant]
    clip = variant == "clip"
    processor = {"image_processor_type": kind, "do_resize": True, "resample": 3 if variant != "vit" else 2,
                 "size": {"shortest_edge": SIZE} if clip else {"height": SIZE, "width": SIZE},
                 "do_center_crop": clip, "crop_size": {"height": SIZE, "width": SIZE}, "do_rescale": True,
                 "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": list(OPENAI_CLIP_MEAN) if clip else [0.5] * 3,
                 "image_std": list(OPENAI_CLIP_STD) if clip else [0.5] * 3}
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(processor))
    return config


def shapes_scene(image_size=32, index=10**9 + 1):
    """A one-shape scene from beyond the shipped dual encoder's training indices, and every name."""
    from ..data.shapes import ShapesWorld
    world = ShapesWorld(image_size=image_size, max_shapes=1)
    return world.scene(index, "train"), world.class_names()


def sample(variant, image=None, prompt=None, shipped=False) -> Sample:
    """`prompt`: captions separated by '|' (CLIP / SigLIP). The shipped CLIP's sample is a shapes
    scene it never saw, against "a <colour> <shape>" for every name of the world."""
    captions = tuple(c.strip() for c in prompt.split("|")) if prompt else None
    if shipped and image is None:
        scene, names = shapes_scene()
        return Sample(scene.image, f"shapes-world scene {10**9 + 1} ({scene.caption}), never trained on",
                      captions or tuple(f"a {n}" for n in names), f"a {scene.shapes[0].name}")
    return Sample(image, None, captions or (CAPTIONS if variant != "vit" else None))


def tokenizers(folder):
    """(ours, transformers') for the folder: the shipped shapes models speak the word-level shapes
    tokenizer (no HF counterpart: both models read its ids); the tiny ones the character tokenizer."""
    import weights_convert
    if (Path(folder) / "shapes_vocab.json").is_file():
        from ..data.shapes_tokenizer import ShapesTokenizer
        return ShapesTokenizer(), None
    return weights_convert.load_tokenizer(folder), hf_tokenizer


def tower_of(model):
    """The vision tower: ViTForImageClassification's vit, a dual encoder's vision_model."""
    return model.vit if hasattr(model, "vit") else model.vision_model


@torch.no_grad()
def run_parts(model, pixel_values, text=None, embed=lambda tower, pv: tower.embed(pv)):
    """{stage name: tensor} of either side (HF's names on both): `embed` is the one call that differs."""
    tower = tower_of(model)
    hidden = tower(pixel_values, output_hidden_states=True).hidden_states
    out = {"pixel_values": pixel_values, "patch embedding": embed(tower, pixel_values)}
    out.update({f"encoder layer {i}": h for i, h in enumerate(hidden)})
    if text is None:  # ViT: the classifier on the normed [CLS]
        last = tower(pixel_values).last_hidden_state
        out["final norm [CLS]"] = last[:, 0]
        out["logits"] = model.classifier(last[:, 0])
        out["predicted class"] = out["logits"].argmax(-1)
        return out
    features = model.get_image_features(pixel_values)
    out["image embedding"] = getattr(features, "pooler_output", features)
    out["caption tokens"] = text["input_ids"]
    out["text encoder"] = model.text_model(**text).last_hidden_state
    features = model.get_text_features(**text)
    out["text embedding"] = getattr(features, "pooler_output", features)
    out["logits_per_image"] = model(pixel_values=pixel_values, **text).logits_per_image
    out["best caption"] = out["logits_per_image"].argmax(-1)
    return out


def _text(tokenizer, captions, variant, device):
    """SigLIP reads its texts without a mask, as trained (it pools the last position); CLIP with one."""
    text = {k: v.to(device) for k, v in tokenize(tokenizer, list(captions)).items()}
    return {"input_ids": text["input_ids"]} if variant == "siglip" else text


def trace(loaded, sample, max_new_tokens=None):
    import weights_convert
    model, variant = loaded.ours, loaded.variant
    processor = weights_convert.load_image_processor(loaded.folder)
    stages, rgb = image_stages(processor, sample.image, sample.image_name)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    pixel_values = processor(rgb)["pixel_values"].to(device, dtype)
    tokenizer = tokenizers(loaded.folder)[0] if sample.prompt else None
    text = _text(tokenizer, sample.prompt, variant, device) if sample.prompt else None
    parts = run_parts(model, pixel_values, text)
    patch = tower_of(model).config.patch_size
    notes = {"pixel_values": f"resized to {pixel_values.shape[-2]}x{pixel_values.shape[-1]}, normalised",
             "patch embedding": f"{(pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch)} patches of "
                                f"{patch}px" + (" + [CLS]" if variant != "siglip" else "") + ", + positions",
             "text encoder": "causal self-attention (CLIP) / bidirectional (SigLIP)",
             "image embedding": "pooled, projected" if variant == "clip" else "attention-pooled (SigLIP's head)",
             "text embedding": "pooled at <eos>, projected" if variant == "clip" else "last position, projected",
             "logits_per_image": "scale x cosine" + (" + bias" if variant == "siglip" else "")}
    for name, value in parts.items():
        if name == "predicted class":
            label = model.config.id2label[int(value[0])] if getattr(model.config, "id2label", None) else int(value[0])
            stages.append(Stage(name, value, shape(value), repr(label), ids=True))
        elif name == "best caption":
            best = sample.prompt[int(value[0])]
            stages.append(Stage(name, value, shape(value), repr(best), ids=True,
                                extra={"answer": best, "question": f"which of {len(sample.prompt)} captions?"}))
        elif name == "caption tokens":
            stages.append(Stage(name, value, shape(value), f"{len(sample.prompt)} captions: "
                                + token_view(value[0], tokenizer), ids=True))
        else:
            stages.append(Stage(name, value, shape(value), notes.get(name, "")))
    return stages


def reference(loaded, sample, max_new_tokens=None, stages=None):
    hf, variant = loaded.reference, loaded.variant
    kind = {"vit": "ViTImageProcessorPil", "clip": "CLIPImageProcessorPil", "siglip": "SiglipImageProcessorPil"}[variant]
    pixel_values = hf_pixel_values(kind, loaded.folder, sample.image, hf)
    text = None
    if sample.prompt:
        ours, make = tokenizers(loaded.folder)
        text = _text(make(loaded.folder) if make else ours, sample.prompt, variant, hf.device)
    return run_parts(hf, pixel_values, text, embed=lambda tower, pv: tower.embeddings(pv))
