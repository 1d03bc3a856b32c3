"""Zero-shot image classification with a dual encoder (CLIP paper, section 3.1.4 "prompt ensembling").

    class names x prompt templates  ->  prompts "a photo of a {}."       (C * T strings)
      -> text features, L2-normalised, averaged over the T templates,
         and normalised again                                            classifier (C, E)
    images -> image features, L2-normalised                              (B, E)
    probs = softmax(exp(logit_scale) * images @ classifier^T)            (B, C)

Works with CLIPModel and SiglipModel (anything with get_text_features / get_image_features and
a logit_scale). For SigLIP the softmax ranks the classes the same way its sigmoid would; use
`sigmoid=True` for SigLIP's own independent per-class probabilities (scale and bias applied).
`tokenize(list_of_strings)` returns input_ids (B, L) or a dict with input_ids (+ attention_mask).
"""
import torch

from ..data.shapes import EVAL_START

DEFAULT_TEMPLATES = ("a photo of a {}.",)


def _encode(tokenize, prompts, device):
    enc = tokenize(prompts)
    if torch.is_tensor(enc):
        enc = {"input_ids": enc}
    if "input_ids" not in enc:
        raise ValueError(f"tokenize must return input_ids or a dict with 'input_ids', got keys {sorted(enc)}")
    keep = ("input_ids", "attention_mask", "position_ids")
    return {k: torch.as_tensor(v).to(device) for k, v in enc.items() if k in keep}


@torch.no_grad()
def class_embeddings(model, tokenize, class_names, templates=DEFAULT_TEMPLATES):
    """(C, E): one unit vector per class, the renormalised mean of its prompts' text embeddings."""
    if not class_names or not templates:
        raise ValueError("zero-shot needs at least one class name and one template")
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' for the class name")
    prompts = [t.format(name) for name in class_names for t in templates]  # class-major: (C * T,)
    device = next(model.parameters()).device
    feats = model.get_text_features(**_encode(tokenize, prompts, device))  # (C * T, E)
    feats = feats / feats.norm(dim=-1, keepdim=True)
    mean = feats.view(len(class_names), len(templates), -1).mean(dim=1)  # (C, E)
    return mean / mean.norm(dim=-1, keepdim=True)


@torch.no_grad()
def classify(model, pixel_values, classes, sigmoid=False):
    """pixel_values (B, C, H, W), classes (K, E) from class_embeddings -> probabilities (B, K)."""
    image = model.get_image_features(pixel_values)  # (B, E)
    image = image / image.norm(dim=-1, keepdim=True)
    logits = image @ classes.to(image.dtype).t() * model.logit_scale.exp()  # (B, K)
    if sigmoid:
        bias = getattr(model, "logit_bias", None)
        return torch.sigmoid(logits if bias is None else logits + bias)
    return logits.softmax(dim=-1)


def zero_shot(model, tokenize, pixel_values, class_names, templates=DEFAULT_TEMPLATES, sigmoid=False):
    """Probabilities (B, K) of each image over the class names, and the predicted names."""
    probs = classify(model, pixel_values, class_embeddings(model, tokenize, class_names, templates), sigmoid)
    return probs, [class_names[i] for i in probs.argmax(dim=-1).tolist()]


# --- the shapes world: the shipped CLIP / SigLIP measured ---------------------------------------

# Prompt templates for zero-shot: the captions' own phrasings (the tokenizer knows no other words).
TEMPLATES = ("a {}", "a {} on the left", "a {} on the right", "a {} in the middle")


def tokenize_fn(kind, tokenizer):
    """SigLIP's text tower pools the LAST position, so its texts are padded to one fixed length
    (and it takes no attention mask, as SigLIP was trained); CLIP pools at <eos>."""
    if kind == "siglip":
        return lambda texts: {"input_ids": tokenizer(texts, padding="max_length")["input_ids"]}
    return lambda texts: tokenizer(texts)


@torch.no_grad()
def zero_shot_accuracy(model, world, tokenize, processor, split, count=240, templates=TEMPLATES):
    """Fraction of `count` fresh scenes of `split` whose shape's name ranks first among ALL the
    world's class names (24: chance is 1/24 ~ 4%), with the prompt ensemble of TEMPLATES."""
    was_training = model.training
    model.eval()
    names = world.class_names()
    classes = class_embeddings(model, tokenize, names, templates)  # (24, E)
    scenes = world.scenes(count, split, start=EVAL_START)
    device = next(model.parameters()).device
    pixel_values = processor([s.image for s in scenes])["pixel_values"].to(device)
    predicted = classify(model, pixel_values, classes).argmax(dim=-1).tolist()
    model.train(was_training)
    return sum(names[p] == s.shapes[0].name for p, s in zip(predicted, scenes)) / count
