"""`python -m minivlm <command>`: each command is a module in minivlm/commands with
add_arguments(parser) and run(args).

A user's mistake ends in one `error:` line on stderr (what was expected, what came, what to do) and
exit code 2, whatever the command: argparse's own errors, a UsageError, and the errors a library
raises for bad input (a missing file, a refused checkpoint or index, bad data). Anything else is a
bug and keeps its traceback; --debug (before or after the command) shows the traceback of every error.
"""
import argparse
import importlib
import sys

COMMANDS = {
    "parity": "compare every supported family (or a local checkpoint) with the transformers reference",
    "train": "train a tiny model from scratch on the synthetic shapes world (clip, siglip, blip, blip2, llava), "
             "or LLaVA on your own LLaVA-format JSON",
    "bench": "time minivlm against transformers on the same weights, with this machine's measured limits",
    "trace": "follow one image + prompt through LLaVA, stage by stage, with shapes and the HF reference",
    "ship": "copy a trained run into the package as a shipped model (minivlm/pretrained), with its card",
    "index": "embed a folder of images and/or texts with a dual encoder into an index on disk (appendable)",
    "search": "search an index by text or image (text -> image, image -> text, image -> image), ITM re-ranking",
    "chat": "talk to a checkpoint about images: its processor and chat template, streamed replies, HF's options",
    "notebooks": "re-execute every notebook in place and store its outputs (notebooks/*.ipynb)",
}


class Parser(argparse.ArgumentParser):
    """argparse's errors as one line (its usage block is what --help is for), exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help shows its default, except where there is none to show (None, False) or the
    help text states it already."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def user_errors():
    """The exceptions that mean bad input rather than a bug (each names what was wrong)."""
    from minivlm.errors import UsageError
    from minivlm.train.checkpointing import CheckpointError
    from weights_convert.errors import CheckpointError as ConvertError
    # ValueError covers UsageError, IndexMismatchError, JSONDecodeError and the data checks; FloatingPointError
    # is the loop's "the loss is nan: lower the learning rate".
    return (UsageError, ValueError, OSError, FloatingPointError, CheckpointError, ConvertError)


def one_line(error):
    """An exception as one line: its message's lines joined (a list of bad records stays readable)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return text or type(error).__name__


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = Parser(prog="python -m minivlm", description="minivlm's commands; `python -m minivlm COMMAND --help` "
                                                          "shows each one's options and their defaults")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"minivlm.commands.{name}")
        parsers[name] = sub.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsFormatter)
        module.add_arguments(parsers[name])
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser, so that the hint points at its --help
        parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code = importlib.import_module(f"minivlm.commands.{args.command}").run(args)
    except SystemExit as e:
        if isinstance(e.code, str):  # raise SystemExit("message"): Python would print it and exit 1
            if debug:
                raise
            _fail(e.code)
        raise
    except user_errors() as e:
        if debug:
            raise
        _fail(one_line(e))
    sys.exit(code or 0)


def _fail(message):
    print(f"error: {message}" if not message.startswith("error:") else message, file=sys.stderr, flush=True)
    sys.exit(2)
