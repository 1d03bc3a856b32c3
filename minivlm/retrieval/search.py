"""Search an index by text or by image, and measure recall@k.

    hits = search(index, encoder, text="a red circle on the left", k=5, kind="image")   # text -> image
    hits = search(index, encoder, image=pil, k=5, kind="text")                           # image -> text
    hits = search(index, encoder, image=pil, k=5, kind="image")                          # image -> image
    hits[0] = Hit(row=812, score=0.93, record={"kind": "image", "path": ...})

recall_at_k(ranked_rows, relevant) is the fraction of queries with at least one relevant row among
the first k (the usual text -> image retrieval figure when several images fit one caption).
"""
from dataclasses import dataclass

import torch


@dataclass
class Hit:
    row: int          # the row of the index
    score: float      # cosine similarity (or the re-ranker's score)
    record: dict      # the row's metadata


def embed_query(encoder, text=None, image=None):
    if (text is None) == (image is None):
        raise ValueError("give exactly one of text= or image= as the query")
    if text is not None:
        return encoder.embed_texts([text] if isinstance(text, str) else text)
    from .index import read_image
    images = image if isinstance(image, (list, tuple)) else [image]
    return encoder.embed_images([read_image(i) if not hasattr(i, "convert") else i.convert("RGB") for i in images])


def search(index, encoder, text=None, image=None, k=5, kind=None):
    """The k best rows for one query (a string or one image) -> [Hit]; a list of queries -> [[Hit]]."""
    many = isinstance(text, (list, tuple)) or isinstance(image, (list, tuple))
    scores, rows = index.search(embed_query(encoder, text, image), k, kind)
    hits = [[Hit(r, s, index.records[r]) for s, r in zip(srow.tolist(), rrow.tolist())]
            for srow, rrow in zip(scores, rows)]
    return hits if many else hits[0]


def recall_at_k(ranked, relevant, ks=(1, 5, 10)):
    """ranked: (Q, K) rows per query, best first; relevant: per query a set of rows -> {k: recall}."""
    ranked = ranked.tolist() if torch.is_tensor(ranked) else ranked
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} ranked lists but {len(relevant)} relevant sets")
    return {k: sum(any(r in rel for r in row[:k]) for row, rel in zip(ranked, relevant)) / len(ranked) for k in ks}
