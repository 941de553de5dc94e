"""Errors a user can cause: the CLI prints their message as one line and exits with code 2."""


class BenchError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class UnknownNameError(BenchError, KeyError):
    """A method, dataset, task or backbone name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""
