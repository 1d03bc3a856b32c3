"""UsageError: a mistake of the user's (a missing file, a flag that contradicts another), not a bug.

`python -m minivlm` (cli.py) prints it as one `error:` line and exits with code 2; a library caller
catches it as the ValueError it also is. Any module may raise it: it imports nothing.
"""


class UsageError(ValueError):
    """What was expected, what came, what to do: one sentence the user can act on."""
