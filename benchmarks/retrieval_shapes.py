"""The README's retrieval / RAG figures on the shapes world (minivlm/retrieval/shapes_eval.py).

    python benchmarks/retrieval_shapes.py --siglip runs/siglip [--blip runs/blip] [--out result.json]

CLIP, BLIP (captioner and retrieval heads) and LLaVA are the shipped models (minivlm/pretrained);
SigLIP is not shipped: train it with `python -m minivlm train siglip` and point at runs/siglip.
--blip takes another BLIP run's retrieval/ folder (the run's shapes_vocab.json is copied in).
One CPU thread: on a loaded box, two threads spin against each other and run several times slower.
"""
import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from minivlm import pretrained
from minivlm.retrieval.shapes_eval import markdown, measure


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--siglip", help="a SigLIP run folder (train siglip)")
    p.add_argument("--blip", help="a BLIP run folder (train blip) whose retrieval/ holds the ITC + ITM heads "
                                  "(default: the shipped shapes-blip-retrieval)")
    p.add_argument("--gallery", type=int, default=3000)
    p.add_argument("--held-out", type=int, default=1000)
    p.add_argument("--two-shapes", type=int, default=2000)
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    retrieval = pretrained.path("shapes-blip-retrieval")
    if args.blip:
        retrieval = Path(args.blip) / "retrieval"
        if not (retrieval / "shapes_vocab.json").is_file():
            shutil.copy(Path(args.blip) / "shapes_vocab.json", retrieval / "shapes_vocab.json")
    with tempfile.TemporaryDirectory() as scratch:
        result = measure(scratch, pretrained.path("shapes-clip"), args.siglip, retrieval, pretrained.path("shapes-blip"),
                         pretrained.path("shapes-llava"), args.gallery, args.held_out,
                         args.two_shapes)
    print(markdown(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
