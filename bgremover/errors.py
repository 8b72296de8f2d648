"""Errors shared by the layers: the command line's, and a model that cannot be had (`ModelLoadError`)."""


class UsageError(Exception):
    """A mistake in the command line; printed without a trace, exit status 2."""


class ModelLoadError(RuntimeError):
    """A model could not be found, fetched or loaded; the message says why and how to fix it."""


class ChildFailed(Exception):
    """A measurement's child process failed; printed with the child's last message, without a trace, exit status 1."""


def last_line(stderr: str) -> str:
    """What a failed child process said last (the CLI's own `error: ...` line when it caught the failure)."""
    lines = stderr.strip().splitlines()
    return lines[-1].removeprefix("error: ") if lines else "no message (see its exit status)"
