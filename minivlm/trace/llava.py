"""Follow one multimodal sample through LLaVA, stage by stage, with shapes and the HF reference.

    image file -> RGB -> resize/pad -> pixel_values -> patch embedding -> encoder layers
      -> selected layer -> projector -> prompt tokens with image placeholders -> merged embeddings
      -> decoder -> logits -> generated tokens

`trace_llava` runs minivlm's model part by part and records every stage; `reference_llava` runs
transformers' LlavaForConditionalGeneration + LlavaProcessor on the same image and prompt and reads
the same stages (hooks where a tensor is internal); stage.compare puts the max |diff| beside each.
`python -m minivlm trace` and notebooks/06_llava.ipynb are thin layers over these functions.

The default needs no download: the tiny LLaVA trained on the shapes world that the package ships
(minivlm/pretrained/shapes-llava, `python -m minivlm train llava`), asked a question about a scene
it never saw (`shapes_sample`), so the trace ends on an answer that can be checked. `--random`
instead builds an untrained tiny LLaVA from `tiny_config` with a fixed seed (trace/tiny.py). Both
speak the character tokenizer of minivlm/processing/tiny_tokenizer.py.
"""
import json
from pathlib import Path

import torch

from ..models.llava import select_features
from ..processing.conversation import DEFAULT_IMAGE_TOKEN, prompt as chat_prompt
from ..processing.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, load_image
from ..processing.tiny_tokenizer import tiny_vocabulary, write_tiny_tokenizer
from .capture import input_of
from .families import Sample
from .inputs import default_image, expand_placeholders, image_stages
from .stage import Stage, first_stop, shape, token_view

TITLE = "LLaVA"
DEFAULT_QUESTION = "What is in the picture?"
TEMPLATE = "llava_hf"   # "USER: <image>\n... ASSISTANT:", the llava-hf checkpoints' prompt

SHAPES_LLAVA = "shapes-llava"
# The shipped LLaVA's sample: a scene from the evaluation range (indices from 10**9; training used
# 0..1999), "a green square and a blue circle", and its third question, "what color is the circle?".
# The model answers 80-95% of the questions on such scenes right (its card); this one is among them,
# and tests/test_trace.py checks that it still is.
SAMPLE_SCENE, SAMPLE_QUESTION = 10**9 + 1, 2


def shapes_sample(index=SAMPLE_SCENE, question=SAMPLE_QUESTION, image_size=32, max_shapes=2):
    """A shapes-world scene of the split the shipped LLaVA trained on (seen colour/shape pairs) but at
    an index it never trained on, with one of its questions and the true answer."""
    from ..data.shapes import ShapesWorld
    scene = ShapesWorld(image_size=image_size, max_shapes=max_shapes).scene(index, "train")
    q, a = scene.questions[question]
    return Sample(scene.image, f"shapes-world scene {index} ({scene.caption}), never trained on", q, a)


SHIPPED = {None: SHAPES_LLAVA}


def sample(variant, image=None, prompt=None, shipped=False) -> Sample:
    """The shipped model's own kind of image (a never-seen shapes scene and its question) when it runs
    on no image of the caller's; otherwise the caller's image (or grace_hopper.jpg) and prompt."""
    if shipped and image is None:
        scene = shapes_sample()
        return Sample(scene.image, scene.image_name, prompt or scene.prompt, None if prompt else scene.truth)
    return Sample(image, None, prompt)


TINY_IMAGE = 64   # pixels: 8 x 8 patches of 8


def write_tiny_processor(folder, size=TINY_IMAGE):
    """LLaVA-1.5's preprocessing at a tiny size: pad to a square with the mean colour, resize the
    shortest edge, centre-crop, CLIP's mean/std."""
    config = {"image_processor_type": "LlavaImageProcessor", "do_pad": True, "do_resize": True,
              "size": {"shortest_edge": size}, "do_center_crop": True, "crop_size": {"height": size, "width": size},
              "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD), "do_convert_rgb": True}
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(config))


def tiny_config(vocab_size):
    """The default model as an HF LlavaConfig dict (the form config.json holds)."""
    vocab = tiny_vocabulary()
    return {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "image_token_index": len(vocab), "pad_token_id": len(vocab) + 1, "image_seq_length": (TINY_IMAGE // 8) ** 2,
        "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
        "vision_config": {"model_type": "clip_vision_model", "image_size": TINY_IMAGE, "patch_size": 8,
                          "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                          "num_attention_heads": 4, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
        "text_config": {"model_type": "llama", "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128,
                        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
                        "pad_token_id": len(vocab) + 1, "initializer_range": 0.1},
    }


def write_tiny(folder, variant=None) -> dict:
    """The tiny default's tokenizer, preprocessor and processor files; returns its config.json dict."""
    vocab_size = write_tiny_tokenizer(folder)
    write_tiny_processor(folder)
    config = tiny_config(vocab_size)
    processor = {"processor_class": "LlavaProcessor", "image_token": DEFAULT_IMAGE_TOKEN,
                 "patch_size": config["vision_config"]["patch_size"],
                 "vision_feature_select_strategy": config["vision_feature_select_strategy"],
                 "num_additional_image_tokens": 1}  # the tower's [CLS]
    (Path(folder) / "processor_config.json").write_text(json.dumps(processor))
    return config


# --- the stages -------------------------------------------------------------------------------------

def full_prompt(text=None):
    """A question -> the llava-hf prompt with the image first; a text holding <image> is used as is."""
    text = text or DEFAULT_QUESTION
    return text if DEFAULT_IMAGE_TOKEN in text else chat_prompt(TEMPLATE, f"{DEFAULT_IMAGE_TOKEN}\n{text}")


def expand_prompt(text, num_image_tokens):
    """HF's LlavaProcessor: every <image> becomes one <image> per feature before tokenizing."""
    return expand_placeholders(text, DEFAULT_IMAGE_TOKEN, [num_image_tokens] * text.count(DEFAULT_IMAGE_TOKEN))


@torch.no_grad()
def trace_llava(model, processor, image=None, prompt=None, max_new_tokens=8, image_name=None):
    """Run one image + prompt through minivlm's LLaVA; returns the list of Stages. `processor` is the
    whole processor (weights_convert.load_processor): its image processor's steps are shown one by one,
    then the processor itself turns the prompt and the image into input_ids and pixel_values, as a
    user's call would. `image_name` names an in-memory image in the table."""
    tokenizer, whole, processor = processor.tokenizer, processor, processor.image_processor
    cfg, tower = model.config, model.vision_tower
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    stages, rgb = image_stages(processor, image, image_name)
    geo = processor.geometry(rgb)
    size = processor.size
    size = f"shortest edge {size['shortest_edge']}" if "shortest_edge" in size else f"{size['height']}x{size['width']}"
    steps = (["pad to square (mean colour)"] if processor.do_pad else []) + [f"resize {size}"] + \
            ([f"crop {processor.crop_size['height']}x{processor.crop_size['width']}"] if processor.do_center_crop else [])
    stages.append(Stage("resize/pad", geo, f"{geo.width}x{geo.height}", ", ".join(steps)))
    inputs = whole(images=rgb, text=full_prompt(prompt), return_tensors="pt")  # the real prompt path
    pixel_values = inputs["pixel_values"].to(device, dtype)  # (1, 3, H, W)
    stages.append(Stage("pixel_values", pixel_values, shape(pixel_values),
                        f"(x / 255 - mean) / std, range [{pixel_values.min():.2f}, {pixel_values.max():.2f}]"))

    rows, cols = pixel_values.shape[-2] // tower.config.patch_size, pixel_values.shape[-1] // tower.config.patch_size
    embedded = tower.embed(pixel_values)  # (1, 1 + N, D_v)
    stages.append(Stage("patch embedding", embedded, shape(embedded),
                        f"[CLS] + {rows}x{cols} patches of {tower.config.patch_size}px, + positions"))
    hidden = tower(pixel_values, output_hidden_states=True).hidden_states
    for i, h in enumerate(hidden):
        stages.append(Stage(f"encoder layer {i}", h, shape(h), "after pre-norm" if i == 0 else ""))
    layer, strategy = cfg.vision_feature_layer, cfg.vision_feature_select_strategy
    selected = select_features(hidden, layer, strategy)
    stages.append(Stage("selected layer", selected, shape(selected),
                        f"hidden_states[{layer}], " + ("[CLS] dropped" if strategy == "default" else "[CLS] kept")))
    projected = model.multi_modal_projector(selected)
    stages.append(Stage("projector", projected, shape(projected),
                        f"{selected.shape[-1]} -> {projected.shape[-1]} ({len(model.multi_modal_projector.linears())} "
                        f"linear, {model.multi_modal_projector.act_name})"))

    ids = inputs["input_ids"].to(device)  # (1, L): each <image> expanded to one token per feature
    stages.append(Stage("prompt tokens", ids, shape(ids),
                        f"{int((ids == cfg.image_token_index).sum())} <image> + "
                        f"{int((ids != cfg.image_token_index).sum())} text: "
                        f"{token_view(ids[0], tokenizer, {cfg.image_token_index})}",
                        extra={"placeholder": cfg.image_token_index}, ids=True))
    merged, _ = model.embed(ids, pixel_values)
    stages.append(Stage("merged embeddings", merged, shape(merged), "image features written at the <image> positions"))
    body = model.language_model.model(inputs_embeds=merged).last_hidden_state
    stages.append(Stage("decoder", body, shape(body), f"{cfg.text_config.num_hidden_layers} LLaMA layers + RMSNorm"))
    logits = model.language_model.lm_head(body)
    top = logits[0, -1].float().topk(10).indices.tolist()
    names = tokenizer.convert_ids_to_tokens(top)
    stages.append(Stage("logits", logits, shape(logits), f"next token {names[0]!r}", extra={"top_tokens": names}))
    generated = model.generate(input_ids=ids, pixel_values=pixel_values, max_new_tokens=max_new_tokens)
    new = generated[0, ids.shape[1]:]
    answer = tokenizer.decode(first_stop(new.tolist(), cfg.text_config.eos_token_id)).strip()  # up to </s>
    stages.append(Stage("generated tokens", new, f"{len(new)} new",
                        f"{answer!r} = {' '.join(tokenizer.convert_ids_to_tokens(new.tolist()))}",
                        extra={"answer": answer, "question": prompt or DEFAULT_QUESTION}, ids=True))
    return stages


@torch.no_grad()
def reference_llava(reference, folder, image=None, prompt=None, max_new_tokens=8):
    """The same stages from transformers' model and processor (read from `folder`): {name: tensor}."""
    import transformers
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    cfg = reference.config
    proc = transformers.LlavaProcessor(image_processor=LlavaImageProcessorPil.from_pretrained(folder), tokenizer=tok,
                                       patch_size=cfg.vision_config.patch_size,
                                       vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                                       num_additional_image_tokens=1)
    raw = load_image(image if image is not None else default_image())
    inputs = proc(images=raw.convert("RGB"), text=full_prompt(prompt), return_tensors="pt")
    device, dtype = reference.device, reference.dtype
    pv, ids = inputs["pixel_values"].to(device, dtype), inputs["input_ids"].to(device)
    out = {"pixel_values": pv, "prompt tokens": ids}
    vision = reference.model.vision_tower
    out["patch embedding"] = vision.embeddings(pv)
    hidden = vision(pv, output_hidden_states=True).hidden_states
    out.update({f"encoder layer {i}": h for i, h in enumerate(hidden)})
    layer = cfg.vision_feature_layer
    picked = [hidden[k] for k in ([layer] if isinstance(layer, int) else layer)]
    if cfg.vision_feature_select_strategy == "default":
        picked = [h[:, 1:] for h in picked]
    out["selected layer"] = torch.cat(picked, dim=-1)
    out["projector"] = torch.stack(list(reference.model.get_image_features(pv).pooler_output))
    with input_of(reference.model.language_model) as seen:  # the decoder's input: HF's merged embeddings
        body = reference.model(input_ids=ids, pixel_values=pv)
    out["merged embeddings"] = seen["inputs_embeds"]
    out["decoder"] = body.last_hidden_state
    out["logits"] = reference(input_ids=ids, pixel_values=pv).logits
    generated = reference.generate(input_ids=ids, pixel_values=pv, max_new_tokens=max_new_tokens, do_sample=False)
    out["generated tokens"] = generated[0, ids.shape[1]:]
    return out


def trace(loaded, sample, max_new_tokens=8):
    import weights_convert
    return trace_llava(loaded.ours, weights_convert.load_processor(loaded.folder), sample.image, sample.prompt,
                       max_new_tokens, sample.image_name)


def reference(loaded, sample, max_new_tokens=8, stages=None):
    return reference_llava(loaded.reference, loaded.folder, sample.image, sample.prompt, max_new_tokens)
