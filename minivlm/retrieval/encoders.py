"""One interface over every dual encoder: images or texts in, L2-normalised vectors (B, E) out.

    encoder = load_encoder("minivlm/pretrained/shapes-clip")       # a folder, or a loaded model
    encoder.embed_images([pil, pil, ...])    # (B, E), unit rows
    encoder.embed_texts(["a red circle"])    # (B, E), unit rows, in the same space
    encoder.name, encoder.dim, encoder.fingerprint   # what an index records, and checks

Which features go into the space is the one difference between the families, so it is one small
function per model class (FEATURES below):

    CLIPModel / SiglipModel          get_image_features / get_text_features (the projected pooled states)
    BlipForImageTextRetrieval        ITC: vision_proj / text_proj of the [CLS] states of the unimodal
                                     encoders (BLIP paper, Sec. 3.2), the features its ITM re-ranks
    (BLIP-2's Q-Former features)     extension point: register(Blip2ForImageTextRetrieval, image_fn, text_fn)
                                     with the image side max-pooled over the 32 query vectors, as HF does

The shipped shapes-world models read with the word-level ShapesTokenizer (their folder holds
shapes_vocab.json); any other folder loads its own tokenizer through weights_convert.
"""
import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.blip import BlipForImageTextRetrieval
from ..models.dual_encoder import DualEncoder

FEATURES = {}   # model class -> (image_fn(model, pixel_values) -> (B, E), text_fn(model, tok_dict) -> (B, E))


def register(model_class, image_fn, text_fn):
    """Teach the index a new family: two functions returning features (normalised afterwards)."""
    FEATURES[model_class] = (image_fn, text_fn)


register(DualEncoder, lambda m, px: m.get_image_features(px),
         lambda m, tok: m.get_text_features(tok["input_ids"], tok.get("attention_mask")))


def _blip_image(model, pixel_values):
    image = model.encode_image(pixel_values).last_hidden_state  # (B, 1 + N, Dv)
    return model.vision_proj(image[:, 0])


def _blip_text(model, tok):
    # The unimodal text encoder: the BERT weights with cross-attention skipped, [CLS] first (ITC).
    text = model.text_encoder(tok["input_ids"], tok.get("attention_mask")).last_hidden_state
    return model.text_proj(text[:, 0])


register(BlipForImageTextRetrieval, _blip_image, _blip_text)


def fingerprint(model, values=64):
    """A short hash of the first `values` numbers of every parameter: two different checkpoints of
    one architecture differ here, and hashing a few numbers per tensor costs nothing at any size."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().reshape(-1)[:values].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def shapes_tokenizer_for(folder, model):
    """The shapes-world tokenizer a shipped model was trained with, checked against its stored vocabulary."""
    from ..data.shapes_tokenizer import ShapesTokenizer
    stored = json.loads((Path(folder) / "shapes_vocab.json").read_text())
    if isinstance(model, BlipForImageTextRetrieval):
        from ..data.shapes_tokenizer import BlipShapesTokenizer
        tok = BlipShapesTokenizer()
    else:
        tok = ShapesTokenizer()
    if stored[:len(tok.vocab)] != tok.vocab:
        raise ValueError(f"{folder}/shapes_vocab.json differs from minivlm's shapes vocabulary")
    return tok


class Encoder:
    """A loaded dual encoder with its image processor and tokenizer, embedding in batches."""

    def __init__(self, model, processor, tokenizer, name, pad_to_max_length=False, batch_size=256):
        self.model = model.eval()
        self.processor, self.tokenizer, self.name = processor, tokenizer, name
        self.pad_to_max_length = pad_to_max_length   # SigLIP pools the LAST position: fixed-length texts
        self.batch_size = batch_size
        kind = next((c for c in FEATURES if isinstance(model, c)), None)
        if kind is None:
            raise ValueError(f"no embedding rule for {type(model).__name__}; known: "
                             f"{[c.__name__ for c in FEATURES]} (add one with minivlm.retrieval.encoders.register)")
        self._image_fn, self._text_fn = FEATURES[kind]
        self.fingerprint = fingerprint(model)
        self._dim = None

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dim(self):
        if self._dim is None:
            self._dim = self.embed_texts(["a"]).shape[-1]  # the width of the joint space, measured once
        return self._dim

    def tokenize(self, texts):
        kwargs = {"padding": "max_length"} if self.pad_to_max_length else {}
        enc = self.tokenizer(list(texts), **kwargs)
        keep = ("input_ids",) if self.pad_to_max_length else ("input_ids", "attention_mask")
        return {k: torch.as_tensor(enc[k]).to(self.device) for k in keep if k in enc}

    @torch.no_grad()
    def embed_images(self, images):
        """PIL images -> (B, E) unit vectors, float32."""
        pixel_values = self.processor(list(images))["pixel_values"].to(self.device, next(self.model.parameters()).dtype)
        return F.normalize(self._image_fn(self.model, pixel_values).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts):
        """Strings -> (B, E) unit vectors, float32."""
        if isinstance(texts, str):
            texts = [texts]
        return F.normalize(self._text_fn(self.model, self.tokenize(texts)).float(), dim=-1)


def load_encoder(folder, name=None, dtype=torch.float32, device="cpu", tokenizer=None):
    """A dual-encoder folder (CLIPModel, SiglipModel, BlipForImageTextRetrieval) -> Encoder.
    `name` (default: the folder's name) is what an index records and later checks."""
    import weights_convert
    from ..models.siglip import SiglipModel
    folder = Path(folder)
    model = weights_convert.load_pretrained(folder, dtype=dtype, device=device)
    processor = weights_convert.load_image_processor(folder)
    if tokenizer is None:
        tokenizer = (shapes_tokenizer_for(folder, model) if (folder / "shapes_vocab.json").is_file()
                     else weights_convert.load_tokenizer(folder))
    return Encoder(model, processor, tokenizer, name or folder.name, pad_to_max_length=isinstance(model, SiglipModel))
