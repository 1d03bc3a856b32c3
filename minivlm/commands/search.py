"""python -m minivlm search "a red circle on the left" --index INDEX [--checkpoint MODEL] [-k 5]
python -m minivlm search --image FILE --index INDEX [--kind image|text]

Search an index built by `python -m minivlm index` with a text (default: among its images) or an
image (default: among its texts; --kind image for image -> image). --rerank BLIP_RETRIEVAL re-scores
the top --rerank-k of a text query with BLIP's ITM head before printing the top k.
"""
import os


def add_arguments(p):
    p.add_argument("query", nargs="?", help="a text query")
    p.add_argument("--image", metavar="FILE", help="an image query instead of a text")
    p.add_argument("--index", required=True, metavar="INDEX", help="the index folder")
    p.add_argument("--checkpoint", metavar="DIR", help="the encoder that built the index (default: shapes-clip)")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--kind", choices=("image", "text", "any"), help="which rows to search")
    p.add_argument("--rerank", metavar="DIR", help="a BlipForImageTextRetrieval folder: ITM re-ranking")
    p.add_argument("--rerank-k", type=int, default=20)
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from minivlm.commands.index import checkpoint_folder
    from minivlm.retrieval import Index, ItmReranker, load_encoder, search
    if (args.query is None) == (args.image is None):
        print("error: give a text query or --image FILE (one of them)")
        return 2
    kind = args.kind or ("image" if args.query is not None else "text")
    kind = None if kind == "any" else kind
    if args.rerank and args.query is None:
        print("error: --rerank scores (text, image) pairs: it needs a text query")
        return 2
    try:
        encoder = load_encoder(checkpoint_folder(args.checkpoint), device=args.device)
        index = Index.open(args.index, encoder)
        k = max(args.k, args.rerank_k) if args.rerank else args.k
        hits = search(index, encoder, text=args.query, image=args.image, k=k, kind=kind)
        if args.rerank:
            hits = ItmReranker.load(args.rerank, device=args.device).rerank(args.query, hits)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    score = "ITM P(match)" if args.rerank else "cosine"
    for rank, h in enumerate(hits[:args.k], 1):
        print(f"{rank:2d}. {score} {h.score:.4f}  {h.record.get('path') or h.record.get('text')}")
    return 0
