"""`python -m minivlm <command>`: each command is a module in minivlm/commands with
add_arguments(parser) and run(args)."""
import argparse
import importlib
import sys

COMMANDS = {
    "parity": "compare every supported family (or a local checkpoint) with the transformers reference",
    "train": "train a tiny model from scratch on the synthetic shapes world (clip, siglip, blip, llava)",
    "bench": "time minivlm against transformers on the same weights, with this machine's measured limits",
    "trace": "follow one image + prompt through LLaVA, stage by stage, with shapes and the HF reference",
    "ship": "copy a trained run into the package as a shipped model (minivlm/pretrained), with its card",
    "index": "embed a folder of images and/or texts with a dual encoder into an index on disk (appendable)",
    "search": "search an index by text or image (text -> image, image -> text, image -> image), ITM re-ranking",
    "chat": "talk to a checkpoint about images: its processor and chat template, streamed replies, HF's options",
    "notebooks": "re-execute every notebook in place and store its outputs (notebooks/*.ipynb)",
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minivlm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"minivlm.commands.{name}")
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    code = importlib.import_module(f"minivlm.commands.{args.command}").run(args)
    sys.exit(code or 0)
