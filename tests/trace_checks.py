"""Shared by the trace test files: `python -m minivlm trace ARGS` run in-process."""
import argparse

from minivlm.commands import trace as trace_command


def run_trace(capsys, *argv):
    """(exit code, printed output) of the trace command with these arguments."""
    parser = argparse.ArgumentParser()
    trace_command.add_arguments(parser)
    code = trace_command.run(parser.parse_args(list(argv)))
    return code, capsys.readouterr().out
