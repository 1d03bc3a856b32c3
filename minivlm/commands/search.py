"""python -m minivlm search "a red circle on the left" --index INDEX [--checkpoint MODEL] [-k 5]
python -m minivlm search --image FILE --index INDEX [--kind image|text]

Search an index built by `python -m minivlm index` with a text (default: among its images) or an
image (default: among its texts; --kind image for image -> image). --rerank BLIP_RETRIEVAL re-scores
the top --rerank-k of a text query with BLIP's ITM head before printing the top k.
"""
import os
import sys


def positive(text):
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


positive.__name__ = "positive integer"   # argparse names the expected type by it: "invalid positive integer value"


def add_arguments(p):
    p.add_argument("query", nargs="?", help="a text query")
    p.add_argument("--image", metavar="FILE", help="an image query instead of a text")
    p.add_argument("--index", required=True, metavar="INDEX", help="the index folder")
    p.add_argument("--checkpoint", metavar="DIR", help="the encoder that built the index (default: shapes-clip)")
    p.add_argument("-k", type=positive, default=5, help="how many results to print")
    p.add_argument("--kind", choices=("image", "text", "any"),
                   help="which rows to search (default: image rows for a text query, text rows for an image query)")
    p.add_argument("--rerank", metavar="DIR", help="a BlipForImageTextRetrieval folder: ITM re-ranking")
    p.add_argument("--rerank-k", type=positive, default=20, help="how many cosine hits the ITM head re-scores")
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from minivlm.commands.index import checkpoint_folder
    from minivlm.errors import UsageError
    from minivlm.retrieval import Index, ItmReranker, load_encoder, search
    if (args.query is None) == (args.image is None):
        raise UsageError("give a text query or --image FILE (one of them)")
    if args.query is not None and not args.query.strip():
        raise UsageError(f"the text query is empty ({args.query!r}): give some words to search for, "
                         f"e.g. \"a red circle\"")
    if args.image is not None and not os.path.isfile(args.image):
        raise UsageError(f"--image {args.image}: no such file (expected an image file to search with)")
    kind = args.kind or ("image" if args.query is not None else "text")
    kind = None if kind == "any" else kind
    if args.rerank and args.query is None:
        raise UsageError("--rerank scores (text, image) pairs: it needs a text query")
    encoder = load_encoder(checkpoint_folder(args.checkpoint), device=args.device)
    index = Index.open(args.index, encoder)
    rows = len(index) if kind is None else sum(r["kind"] == kind for r in index.records)
    if 0 < rows < args.k:   # said once, here (not by every layer below)
        what = f"{kind} rows" if kind else "rows in all"
        print(f"-k {args.k} is more than the {rows} {what} the index holds: showing all {rows}", file=sys.stderr)
    k = max(args.k, args.rerank_k) if args.rerank else args.k
    hits = search(index, encoder, text=args.query, image=args.image, k=k, kind=kind)
    if args.rerank:
        hits = ItmReranker.load(args.rerank, device=args.device).rerank(args.query, hits)
    score = "ITM P(match)" if args.rerank else "cosine"
    for rank, h in enumerate(hits[:args.k], 1):
        print(f"{rank:2d}. {score} {h.score:.4f}  {h.record.get('path') or h.record.get('text')}")
    return 0
