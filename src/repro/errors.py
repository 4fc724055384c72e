"""Errors a user can fix. The CLI prints their message on one line and exits with their code.

Anything else that escapes is a bug and keeps its traceback.
"""


class ReproError(Exception):
    """A user-facing failure: bad input, missing data, a refused file. Exit code 1."""

    exit_code = 1


class UsageError(ReproError):
    """A bad name or flag on the command line (unknown model, dataset, ...). Exit code 2, like Click."""

    exit_code = 2
