"""What every command shares: exit codes, the usage error, and argument helpers.

Exit codes: 0 success; 1 the sweep ran but some trial errored; 2 bad input (sweep file, override,
argument or path), reported as one line on stderr before anything is scheduled or written; 130
interrupted (Ctrl-C), with the `raylab resume` command that continues. See docs/errors.md.
"""

from __future__ import annotations

import argparse

EXIT_TRIAL_ERRORS = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention for Ctrl-C


class UsageError(ValueError):
    """Bad command-line input that is not a sweep-file problem (e.g. a missing results folder)."""


def split_list(values: list[str] | None) -> list[str] | None:
    """`--by task,cell --by seed` -> ["task", "cell", "seed"]."""
    if not values:
        return None
    return [item for value in values for item in value.split(",") if item]


def non_negative_int(text: str) -> int:
    """argparse type: `--decimals 3`; a negative or non-integer value is a usage error (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value
