"""The contract every task follows.

A task owns its data, its input encoder and readout layer, its loss and its metrics; the training
loop (`raylab.execution.trainable`) owns everything else. Tasks with fresh synthetic data every step have
`steps_per_epoch = None`; finite data sets give the number of training batches per epoch.

Batches are a pure function of (step, seed), so a trial restored from a checkpoint at step k sees
exactly the batches an uninterrupted trial would have seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@dataclass
class Batch:
    inputs: Tensor  # (B, T, input features) or (B, T) token ids, whatever the task's encoder takes
    targets: Tensor
    reset_state: bool = True  # False: carry the (detached) hidden state from the previous batch


@runtime_checkable
class Task(Protocol):
    input_size: int  # features per time step that the cell sees (after `encoder()`)
    output_size: int
    readout_mode: Literal["all", "last"]  # readout at every step, or on the final hidden state only
    steps_per_epoch: int | None
    primary_metric: str  # "split/name" that selects the best checkpoint, e.g. "val/loss"
    eval_splits: tuple[str, ...]  # evaluated at every evaluation, e.g. ("val",)
    final_splits: tuple[str, ...]  # evaluated once with the best checkpoint, e.g. ("test",)
    # The trivial baseline the papers' figures draw dashed, per metric name without the split prefix
    # ({"loss": 1/6} for the adding problem); empty where the papers draw none.
    baselines: dict[str, float]

    def setup(self, device: torch.device, data_dir: str | None) -> None:
        """Load or generate data onto `device`. Called once per trial, never at validation."""

    def encoder(self) -> nn.Module:
        """Maps batch inputs to (B, T, input_size) floats (identity, embedding, ...)."""

    def readout(self, hidden_size: int) -> nn.Module:
        """Maps hidden states to outputs, initialised as in the task's paper."""

    def train_batch(self, step: int, seed: int) -> Batch:
        """The training batch of `step` for a trial seeded `seed`."""

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Scalar training loss."""

    def batch_metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Metrics of one batch besides the loss (e.g. accuracy), keyed without a split prefix.

        0-dim tensors left on the device: the training loop sums them there and reads them back
        once per evaluation, not once per step."""

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics on a split, keyed without a split prefix (`loss`, `acc`)."""

    def metric_names(self) -> tuple[str, ...]:
        """The keys of `evaluate` (`loss` first), for `raylab ls tasks`."""


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded from (trial seed, step): batches do not depend on history."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


EVAL_SEED = 2**31 - 1  # synthetic validation sets are the same for every trial and seed


@torch.no_grad()
def evaluate_batches(model: nn.Module, task: Task, batches: Iterable[Batch]) -> dict[str, float]:
    """Size-weighted mean of loss and batch metrics over fixed batches (one pass, no carried state)."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    for batch in batches:
        outputs, _ = model(batch.inputs)
        size = batch.targets.shape[0]
        values = {"loss": task.loss(outputs, batch.targets), **task.batch_metrics(outputs, batch.targets)}
        values = {name: float(value) for name, value in values.items()}  # evaluation: host reads are fine here
        for name, value in values.items():
            totals[name] = totals.get(name, 0.0) + value * size
        count += size
    model.train(was_training)
    return {name: total / count for name, total in totals.items()}
