"""A row is one configuration: which trials.parquet columns make a configuration, and the checks
that keep tables, plots and comparisons from pooling different ones (docs/identity.md).

A configuration is everything that was resolved for a trial except its seed: `hidden_size` and every
`config.*` column (task, cell, optimizer and training with their defaults filled in, and any key a
sweep searches over). The variant label, the run folder and the budget are names, not configuration.
The code that computed a trial (`code_version`) is not part of it either; a row that pools several
code versions is allowed but always said (`code_note`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from raylab.results.collect import ResultsError

SEED_COLUMN = "seed"


def configuration_columns(trials: pd.DataFrame) -> list[str]:
    """The columns whose values, together, are one resolved configuration (seed left out)."""
    return [c for c in trials.columns if c == "hidden_size" or c.startswith("config.")]


def differing_columns(trials: pd.DataFrame) -> list[str]:
    """Configuration columns that take more than one value (a missing value counts as one) in these trials."""
    return [c for c in configuration_columns(trials) if trials[c].astype(str).nunique(dropna=False) > 1]


def split_by_configuration(trials: pd.DataFrame, by: Sequence[str]) -> list[str]:
    """`by` plus the configuration columns that differ inside any of its groups: one row, one configuration.

    Two variants with one label but different options, a smoke run's 16-unit trials in the sweep
    folder, or two runs of one file with different settings each get their own row, and the added
    columns show what differs.
    """
    by = list(by)
    extra: list[str] = []
    if not by:
        return differing_columns(trials)
    for _, group in trials.groupby(by, sort=False, dropna=False):
        extra += [c for c in differing_columns(group) if c not in by and c not in extra]
    return by + extra


def check_one_configuration(trials: pd.DataFrame, what: str) -> None:
    """Refuse with one line when `trials` (e.g. one cell of a published table) hold several configurations."""
    differing = differing_columns(trials)
    if differing:
        shown = ", ".join(f"{c} ({', '.join(sorted(map(str, trials[c].astype(str).unique())))})" for c in differing[:3])
        more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
        raise ResultsError(f"{what}: pools {trials.groupby(differing, dropna=False).ngroups} configurations that differ in {shown}{more}; select one (e.g. a `where` key or another experiment folder)")


def code_note(trials: pd.DataFrame, by: Sequence[str]) -> str | None:
    """One line naming the rows whose seeds were computed by different code, or None."""
    if "code_version" not in trials.columns:
        return None
    mixed = [key for key, group in trials.groupby(list(by), sort=True, dropna=False) if group["code_version"].nunique(dropna=False) > 1]
    if not mixed:
        return None
    names = "; ".join(" ".join(map(str, key if isinstance(key, tuple) else (key,))) for key in mixed[:3])
    return f"note: {len(mixed)} row(s) pool seeds computed by different code (code_version): {names}; `--by code_version` splits them"
