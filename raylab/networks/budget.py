"""Hidden size for a parameter budget: the seeds' "same number of parameters" columns (nnRNN §9).

The original code solved a quadratic a N^2 + b N + c = P per cell with hand-written coefficients (the
LSTM's counts its readout four times) and truncated the root. Here the count is the real model's
`count_parameters`, so every cell, option and task is covered without a formula: the model is built
on the meta device (no memory, no initialisation) at each candidate N, and a search over N finds

- rounding "floor" (default, like the original's truncation): the largest valid N whose count is at
  most the budget;
- rounding "nearest": the valid N whose count is closest to the budget (the smaller on a tie).

A hidden size the cell rejects (odd N for nnRNN, not a power of two for FFT-style EURNN) is skipped.
Parameter counts grow with N for every cell, which the search relies on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from raylab.networks.model import build_model, count_parameters, on_meta_device
from raylab.spec.typecheck import ConfigError

Rounding = Literal["floor", "nearest"]
MAX_HIDDEN = 1 << 16  # no budget in the seeds comes near this


def model_counter(task: Any, cell_spec: Any, where: str = "cell") -> Callable[[int], int | None]:
    """count(N): free parameters of the task's model with hidden size N, or None if the cell rejects N."""

    def count(hidden_size: int) -> int | None:
        try:
            with on_meta_device():
                return count_parameters(build_model(task, cell_spec, hidden_size, where))
        except ConfigError:
            return None

    return count


def solve_hidden_size(count: Callable[[int], int | None], n_params: int, rounding: Rounding = "floor", max_hidden: int = MAX_HIDDEN) -> int:
    """The hidden size whose parameter count meets `n_params` under `rounding` (see the module doc)."""
    cache: dict[int, int | None] = {}

    def counted(n: int) -> int | None:
        if n not in cache:
            cache[n] = count(n)
        return cache[n]

    def first_valid(start: int, stop: int) -> int | None:
        """Smallest N in [start, stop) that the cell accepts."""
        return next((n for n in range(start, min(stop, max_hidden + 1)) if counted(n) is not None), None)

    low = first_valid(1, max_hidden + 1)
    if low is None or counted(low) > n_params:
        smallest = "no hidden size" if low is None else f"the smallest model (N={low}) has {counted(low)}"
        raise ConfigError(f"budget n_params={n_params}: too small, {smallest}")
    high = None  # invariant: count(low) <= n_params < count(high), high None meaning "not found yet"
    while high is None:
        candidate = first_valid(2 * low, max_hidden + 1)
        if candidate is None:
            raise ConfigError(f"budget n_params={n_params}: needs a hidden size above {max_hidden}")
        if counted(candidate) > n_params:
            high = candidate
        else:
            low = candidate
    while high - low > 1:
        middle = (low + high) // 2
        candidate = first_valid(middle, high)
        if candidate is not None and counted(candidate) <= n_params:
            low = candidate
        else:
            high = middle  # no valid N in [middle, candidate) and candidate too big: the answer is below middle
    if rounding == "nearest":
        above = first_valid(low + 1, max_hidden + 1)
        if above is not None and counted(above) - n_params < n_params - counted(low):
            return above
    return low
