"""python -m minivlm index DIR --checkpoint MODEL [--texts FILE] [--out INDEX] [--on-error skip|raise]

Embed every image of DIR (and/or each line of a text file) with a dual encoder (CLIPModel,
SiglipModel, BlipForImageTextRetrieval folder; default: the shipped shapes-clip) and append them to
an index on disk (minivlm/retrieval/index.py). Running it again on the same --out appends; an index
built by another model is refused. Unreadable images are skipped and listed (--on-error raise refuses).
"""
import os
from pathlib import Path


def add_arguments(p):
    p.add_argument("folder", nargs="?", help="a folder of images (png, jpg, ...), not recursive")
    p.add_argument("--texts", metavar="FILE", help="a text file: one text to index per line")
    p.add_argument("--checkpoint", metavar="DIR", help="the dual encoder's folder (default: the shipped shapes-clip)")
    p.add_argument("--out", metavar="INDEX", help="the index folder (default: FOLDER/.minivlm-index)")
    p.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                   help="unreadable images: skip them (listed and counted) or refuse the whole run")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=os.environ.get("MINIVLM_DEVICE", "cpu"))


def checkpoint_folder(checkpoint):
    from minivlm import pretrained
    return Path(checkpoint) if checkpoint else pretrained.path("shapes-clip")


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from minivlm.retrieval import Index, load_encoder
    if not args.folder and not args.texts:
        print("error: give a folder of images and/or --texts FILE")
        return 2
    if not args.out and not args.folder:
        print("error: --out INDEX is needed when only --texts is given")
        return 2
    out = Path(args.out) if args.out else Path(args.folder) / ".minivlm-index"
    try:
        encoder = load_encoder(checkpoint_folder(args.checkpoint), device=args.device)
        encoder.batch_size = args.batch_size
        index = Index.create(out, encoder, exist_ok=True)
        before = len(index)
        if args.folder:
            added, skipped = index.add_images(args.folder, encoder, on_error=args.on_error)
            for path, why in skipped:
                print(f"skipped {path}: {why}")
            print(f"{added} images added, {len(skipped)} skipped")
        if args.texts:
            lines = [t.strip() for t in Path(args.texts).read_text().splitlines() if t.strip()]
            print(f"{index.add_texts(lines, encoder)} texts added")
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}")
        return 2
    print(f"index {out}: {len(index)} vectors ({len(index) - before} new) of width {index.dim}, "
          f"model {index.header['model']!r}")
    return 0
