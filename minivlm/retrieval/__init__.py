"""Multimodal retrieval and RAG over the dual encoders (CLIP, SigLIP, BLIP's ITC heads).

    encoders.py       one interface: images / texts -> unit vectors in the joint space
    index.py          vectors on disk (safetensors shards + JSON lines), appendable, exact top-k
    faiss_backend.py  optional approximate search (HNSW, faiss-cpu)
    search.py         text -> image, image -> text, image -> image; recall@k
    rerank.py         BLIP's ITM head re-ranks the top-k (ITC then ITM)
    rag.py            retrieved images or captions -> one LLaVA prompt -> the answer
    shapes_eval.py    the measurements on the shapes world (gallery, recall table, QA task)
"""
from .encoders import Encoder, load_encoder, register
from .index import Index, IndexMismatchError, list_images, read_image, topk_exact
from .rag import Llava, RagResult, build_prompt, generate_answer, rag_answer
from .rerank import ItmReranker
from .search import Hit, recall_at_k, search

__all__ = ["Encoder", "load_encoder", "register", "Index", "IndexMismatchError", "list_images", "read_image",
           "topk_exact", "Llava", "RagResult", "build_prompt", "generate_answer", "rag_answer", "ItmReranker",
           "Hit", "recall_at_k", "search"]
