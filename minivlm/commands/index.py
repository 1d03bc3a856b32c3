"""python -m minivlm index DIR --checkpoint MODEL [--texts FILE] [--out INDEX] [--on-error skip|raise]

Embed every image of DIR (and/or each line of a text file) with a dual encoder (CLIPModel,
SiglipModel, BlipForImageTextRetrieval folder; default: the shipped shapes-clip) and append them to
an index on disk (minivlm/retrieval/index.py). Running it again on the same --out appends what is new:
an image already indexed (same path and content) or a text already indexed is left out, so a folder
indexed twice holds each image once; an index built by another model is refused. Unreadable images are
skipped and listed (--on-error raise refuses). A run that adds nothing to a new index leaves no folder.
"""
import os
import shutil
from pathlib import Path

from minivlm.errors import UsageError


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


def check_inputs(args):
    """Refuse what cannot be indexed before a model is loaded or a folder is made."""
    from minivlm.retrieval.index import list_images
    if not args.folder and not args.texts:
        raise UsageError("give a folder of images and/or --texts FILE")
    if not args.out and not args.folder:
        raise UsageError("--out INDEX is needed when only --texts is given")
    if args.folder:
        list_images(args.folder)   # a missing path, a file, a folder without images: refused by name
    if args.texts and not Path(args.texts).is_file():
        raise UsageError(f"--texts {args.texts}: no such file (expected a text file, one text per line)")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from minivlm.retrieval import Index, load_encoder
    from minivlm.retrieval.index import ALREADY_INDEXED
    check_inputs(args)
    out = Path(args.out) if args.out else Path(args.folder) / ".minivlm-index"
    encoder = load_encoder(checkpoint_folder(args.checkpoint), device=args.device)
    encoder.batch_size = args.batch_size
    new_folder, new_index = not out.exists(), not (out / "index.json").exists()
    index = Index.create(out, encoder, exist_ok=True)
    before = len(index)
    try:
        if args.folder:
            added, skipped = index.add_images(args.folder, encoder, on_error=args.on_error)
            unreadable = [(path, why) for path, why in skipped if why != ALREADY_INDEXED]
            for path, why in unreadable:
                print(f"skipped {path}: {why}")
            again = len(skipped) - len(unreadable)
            print(f"{added} images added, {len(unreadable)} skipped"
                  + (f", {again} already in the index (same path and content): left out" if again else ""))
        if args.texts:
            known = {r["text"] for r in index.records if r["kind"] == "text"}
            lines = [t.strip() for t in Path(args.texts).read_text().splitlines() if t.strip()]
            new = list(dict.fromkeys(t for t in lines if t not in known))   # each text once
            print(f"{index.add_texts(new, encoder) if new else 0} texts added"
                  + (f", {len(lines) - len(new)} already in the index: left out" if len(new) < len(lines) else ""))
    except BaseException:
        if new_index and len(index) == 0:   # nothing was added: leave no empty index behind
            _remove_empty_index(out, new_folder)
        raise
    if new_index and len(index) == 0:
        _remove_empty_index(out, new_folder)
        raise UsageError(f"nothing to index: every input was already indexed or empty; no index written at {out}")
    print(f"index {out}: {len(index)} vectors ({len(index) - before} new) of width {index.dim}, "
          f"model {index.header['model']!r}")
    return 0


def _remove_empty_index(out, new_folder):
    """Undo Index.create: the folder if this run made it, else only the files an empty index has."""
    if new_folder:
        shutil.rmtree(out, ignore_errors=True)
        return
    for name in ("index.json", "metadata.jsonl"):
        (out / name).unlink(missing_ok=True)
