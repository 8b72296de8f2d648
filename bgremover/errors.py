"""Errors shared by the command-line front ends (`remove`, `eval`, `bench`)."""


class UsageError(Exception):
    """A mistake in the command line; printed without a trace, exit status 2."""
