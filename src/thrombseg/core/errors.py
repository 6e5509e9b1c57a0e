"""The error a user caused, and the argparse types that report one in a line."""

from __future__ import annotations

import argparse


class UserError(Exception):
    """An error caused by the user's input, reported without a traceback."""


def positive_int(text: str) -> int:
    """argparse ``type`` of a count that must be >= 1 (``--threads``): one line on a bad value."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n
