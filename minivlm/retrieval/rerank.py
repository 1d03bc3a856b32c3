"""Re-rank the top-k of a fast search with BLIP's image-text matching head (BLIP paper, Sec. 5.1:
"we first select k candidates based on the ITC similarity, then rerank them by their ITM scores").

ITC compares two vectors made separately, so one matmul scores a whole gallery; ITM reads the text
with cross-attention into the image's patch states, one forward per (text, image) pair — too slow
for a gallery, affordable for k candidates, and better at details (which shape is where).

    reranker = ItmReranker.load(minivlm.pretrained.path("shapes-blip-retrieval"))   # or any BLIP retrieval folder
    hits = reranker.rerank("a red circle on the left", hits, image_of=lambda rec: read_image(rec["path"]))
"""
from dataclasses import replace
from pathlib import Path

import torch

from ..models.blip import BlipForImageTextRetrieval
from .index import read_image


def _image_of_record(record):
    if "path" not in record:
        raise ValueError(f"cannot re-rank {record!r}: ITM needs the image, and this record has no path")
    return read_image(record["path"])


class ItmReranker:
    def __init__(self, model, processor, tokenizer):
        if not isinstance(model, BlipForImageTextRetrieval):
            raise ValueError(f"ITM re-ranking needs a BlipForImageTextRetrieval, got {type(model).__name__}")
        self.model, self.processor, self.tokenizer = model.eval(), processor, tokenizer

    @classmethod
    def load(cls, folder, dtype=torch.float32, device="cpu"):
        import weights_convert
        from .encoders import shapes_tokenizer_for
        folder = Path(folder)
        model = weights_convert.load_pretrained(folder, dtype=dtype, device=device)
        tok = (shapes_tokenizer_for(folder, model) if (folder / "shapes_vocab.json").is_file()
               else weights_convert.load_tokenizer(folder))
        return cls(model, weights_convert.load_image_processor(folder), tok)

    @torch.no_grad()
    def match_probability(self, texts, images, batch_size=64):
        """P(match) for each pair (texts[i], images[i]) -> (M,)."""
        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} texts but {len(images)} images")
        device = next(self.model.parameters()).device
        out = []
        for s in range(0, len(texts), batch_size):
            tok = self.tokenizer(list(texts[s:s + batch_size]))
            ids = torch.as_tensor(tok["input_ids"]).clone().to(device)
            enc = getattr(self.tokenizer, "enc_token_id", None)
            if enc is not None:   # BLIP marks the image-grounded encoder's input with [ENC] in place of [CLS]
                ids[:, 0] = enc
            mask = torch.as_tensor(tok["attention_mask"]).to(device)
            pixel_values = self.processor(list(images[s:s + batch_size]))["pixel_values"].to(device)
            score = self.model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values,
                               use_itm_head=True).itm_score  # (B, 2): [no match, match]
            out.append(score.float().softmax(-1)[:, 1])
        return torch.cat(out) if out else torch.zeros(0)

    def rerank(self, text, hits, image_of=_image_of_record):
        """Hits of one text query (image rows) -> the same hits sorted by ITM P(match), scores replaced."""
        if not hits:
            return []
        p = self.match_probability([text] * len(hits), [image_of(h.record) for h in hits])
        order = p.argsort(descending=True, stable=True).tolist()
        return [replace(hits[i], score=p[i].item()) for i in order]
