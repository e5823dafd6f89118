"""Metric naming: flat `split/name` keys (`train/loss`, `val/acc`, `test/bpc`)."""

from __future__ import annotations

MAXIMIZED = ("acc", "accuracy")


def metric_mode(name: str) -> str:
    """'max' for accuracies, 'min' for losses, BPC, MSE and perplexity."""
    return "max" if name.rsplit("/", 1)[-1] in MAXIMIZED else "min"
