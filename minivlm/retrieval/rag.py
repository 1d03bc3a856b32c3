"""Retrieval-augmented answers: find the scenes a question is about, then let LLaVA answer.

Two ways to bring the knowledge in (the two approaches of multimodal RAG):

    approach "images"    the query's top-k IMAGES (an image index, text -> image) go into one LLaVA
                         prompt, one <image> each: "USER: <image>\n<image>\n{question} ASSISTANT:"
    approach "captions"  every image was captioned beforehand (BLIP / LLaVA) and the captions indexed
                         as TEXT; the query's top-k captions go into the prompt as text context.
                         Lossier (a wrong caption cannot be undone) but every step is readable text.
                         with_images=True also attaches each caption's source image.

    result = rag_answer(question, llava, index=idx, encoder=enc, approach="images", k=1)
    result.answer, result.hits, result.prompt

The query that searches and the question that LLaVA reads may differ (query=...): the shapes-world
models speak ~40 words, so "how many shapes are in the scene with the red circle on the left?"
is split into the search "a red circle on the left" and LLaVA's "how many shapes are there?".
"""
from dataclasses import dataclass, field

import torch

from ..models.llava_splice import expand_image_tokens, tokenizer_image_token
from ..processing.conversation import DEFAULT_IMAGE_TOKEN, render
from .index import read_image
from .search import search


@dataclass
class Llava:
    """A LLaVA with what it needs to answer: tokenizer, image processor, conversation template."""
    model: object
    tokenizer: object
    processor: object
    template: object
    stop: tuple = (2,)          # </s>

    @classmethod
    def load(cls, folder, template=None):
        import weights_convert
        from ..evaluation.answers import CHAT
        model = weights_convert.load_pretrained(folder, dtype=torch.float32)
        return cls(model, weights_convert.load_tokenizer(folder), weights_convert.load_image_processor(folder),
                   template or CHAT)


@dataclass
class RagResult:
    answer: str
    hits: list                  # the retrieved Hits (row, score, record), best first
    prompt: str
    images: list = field(default_factory=list)   # what LLaVA saw, in prompt order


def build_prompt(template, question, n_images=0, context=()):
    """One user turn: an <image> line per image, then context lines, then the question."""
    lines = [DEFAULT_IMAGE_TOKEN] * n_images + [f"context: {c}" for c in context] + [question]
    return render(template, [("human", "\n".join(lines))], add_generation_prompt=True).text


@torch.no_grad()
def generate_answer(llava, prompt, images, max_new_tokens=12):
    """Greedy reply to one prompt holding len(images) <image> markers."""
    cfg = llava.model.config
    n_markers = prompt.count(DEFAULT_IMAGE_TOKEN)
    if n_markers != len(images):
        raise ValueError(f"the prompt holds {n_markers} {DEFAULT_IMAGE_TOKEN} markers but {len(images)} images came")
    ids = expand_image_tokens(tokenizer_image_token(prompt, llava.tokenizer), cfg.features_per_image,
                              cfg.image_token_index)[None]  # (1, L)
    pixel_values = llava.processor(list(images))["pixel_values"] if images else None  # (I, 3, H, W)
    out = llava.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_values,
                               max_new_tokens=max_new_tokens, eos_token_id=list(llava.stop))
    row = out[0, ids.shape[1]:].tolist()
    cut = next((i for i, t in enumerate(row) if t in llava.stop), len(row))
    return llava.tokenizer.decode(row[:cut]).strip()


def rag_answer(question, llava, index=None, encoder=None, approach="images", k=1, query=None,
               with_images=False, reranker=None, rerank_k=10, max_new_tokens=12):
    """Answer `question` with LLaVA from the top-k items retrieved for `query` (default: the question).
    approach: "images" | "captions" | "none" (LLaVA alone, no retrieval: the baseline)."""
    if approach not in ("images", "captions", "none"):
        raise ValueError(f"approach must be 'images', 'captions' or 'none', got {approach!r}")
    query = question if query is None else query
    hits, images, context = [], [], []
    if approach != "none":
        if index is None or encoder is None:
            raise ValueError(f"approach {approach!r} needs an index and the encoder that built it")
        kind = "image" if approach == "images" else "text"
        hits = search(index, encoder, text=query, k=rerank_k if reranker else k, kind=kind)
        if reranker is not None:
            if approach != "images":
                raise ValueError("ITM re-ranking scores (text, image) pairs: use it with approach='images'")
            hits = reranker.rerank(query, hits)
        hits = hits[:k]
        if approach == "images":
            images = [read_image(h.record["path"]) for h in hits]
        else:
            context = [h.record["text"] for h in hits]
            if with_images:
                images = [read_image(h.record["path"]) for h in hits]
    prompt = build_prompt(llava.template, question, len(images), context)
    return RagResult(generate_answer(llava, prompt, images, max_new_tokens), hits, prompt, images)
