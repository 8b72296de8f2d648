"""Errors shared by the command-line front ends (`remove`, `eval`, `bench`)."""


class UsageError(Exception):
    """A mistake in the command line; printed without a trace, exit status 2."""


class ChildFailed(Exception):
    """A measurement's child process failed; printed with the child's last message, without a trace, exit status 1."""
