"""An approximate nearest-neighbour backend from faiss (optional: pip install 'minivlm[faiss]').

Exact search reads every vector per query; past a few million rows a graph index answers in
logarithmic time instead. HNSW (Malkov & Yashunin, 2016) with the inner-product metric: on unit
vectors the inner product is the cosine, the same score exact search ranks by. `ef_search` trades
speed for recall; at small sizes with a generous ef_search it returns the exact top-k.

    index.backend = FaissHNSW(index)          # then index.search(...) goes through faiss

Measured (1 thread, loaded 2-core box): 50 000 random 64-d unit vectors, 1000 queries: HNSW 0.99 s vs
exact 1.30 s, 96% of the exact top-10 found, after a 87 s build per graph. Random vectors are HNSW's
worst case and 50k rows are small: exact search stays the default; the graph pays off at millions.
"""


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError("the approximate backend needs faiss: pip install 'minivlm[faiss]' "
                          "(or faiss-cpu); exact search needs nothing") from e
    return faiss


class FaissHNSW:
    def __init__(self, index, m=32, ef_construction=200, ef_search=128):
        import numpy as np
        import torch
        faiss = _faiss()
        self.ef_search, self.structures = ef_search, {}
        # One graph per kind (and one over all rows), each with its own rows -> index rows map.
        for kind in (None, "image", "text"):
            mask = index.kind_mask(kind)
            rows = torch.arange(len(index)) if mask is None else mask.nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            if kind is not None and len(rows) == len(index):   # one kind only: the graph over all rows serves
                self.structures[kind] = self.structures[None]
                continue
            graph = faiss.IndexHNSWFlat(index.dim, m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = ef_construction
            graph.add(np.ascontiguousarray(index.vectors[rows].numpy(), dtype=np.float32))
            self.structures[kind] = (graph, rows)

    def search(self, queries, k, kind=None):
        import numpy as np
        import torch
        graph, rows = self.structures[kind]
        graph.hnsw.efSearch = max(self.ef_search, k)
        scores, ids = graph.search(np.ascontiguousarray(queries.numpy(), dtype=np.float32), min(k, len(rows)))
        ids = torch.from_numpy(ids)
        if (ids < 0).any():
            raise RuntimeError("faiss returned fewer than k neighbours; raise ef_search")
        return torch.from_numpy(scores), rows[ids]
