"""Errors shared by the command-line front ends (`remove`, `eval`, `bench`)."""


class UsageError(Exception):
    """A mistake in the command line; printed without a trace, exit status 2."""


class ChildFailed(Exception):
    """A measurement's child process failed; printed with the child's last message, without a trace, exit status 1."""


def last_line(stderr: str) -> str:
    """What a failed child process said last (the CLI's own `error: ...` line when it caught the failure)."""
    lines = stderr.strip().splitlines()
    return lines[-1].removeprefix("error: ") if lines else "no message (see its exit status)"
