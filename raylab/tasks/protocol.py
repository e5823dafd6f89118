"""The contract every task follows.

A task owns its data, its input encoder and readout layer, its loss and its metrics; the training
loop (`raylab.execution.trainable`) owns everything else. Tasks with fresh synthetic data every step have
`steps_per_epoch = None`; finite data sets give the number of training batches per epoch.

Batches are a pure function of (step, seed), so a trial restored from a checkpoint at step k sees
exactly the batches an uninterrupted trial would have seen. Every random stream of a task comes from
`stream(seed, purpose, step)` (docs/identity.md, "Random streams"): no two trials, steps or purposes
share one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, Protocol, runtime_checkable

import numpy as np
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


class Purpose(IntEnum):
    """What a random stream is for: part of its key, so no two purposes share a stream."""

    TRAIN = 1  # a training batch: (trial seed, step)
    VALIDATION = 2  # a fixed validation set, the same for every trial: (EVAL_SEED, 0)
    FRESH_VALIDATION = 3  # a fresh validation set drawn after training step s: (EVAL_SEED, s)
    EPOCH_ORDER = 4  # the order of a finite training set in one epoch: (trial seed, epoch)


EVAL_SEED = 2**31 - 1  # the entropy of streams that are the same for every trial and seed

_MT_WORDS = 624  # the Mersenne Twister's state: torch's CPU generator, 624 32-bit words


def _check_generator_layout() -> int:
    """The byte offset of the Mersenne Twister words in torch's CPU generator state, checked against
    what `manual_seed` writes (word 0 is the seed; each word is stored in 8 bytes), so that a torch
    that changes the layout fails here, loudly, instead of drawing from a wrong state."""
    state = torch.Generator().manual_seed(0x5EED).get_state().numpy()
    offset = 24  # int64 seed, int32 left, int32 seeded, uint64 next: then the words (CPUGeneratorImplStateLegacy)
    words = state[offset : offset + 8 * _MT_WORDS].view(np.uint64)
    if state.view(np.uint8)[:8].view(np.int64)[0] != 0x5EED or words[0] != 0x5EED or words[1] == 0:
        raise RuntimeError("torch's CPU generator state has a layout raylab does not know; raylab.tasks.protocol.stream cannot seed it")
    return offset


_MT_OFFSET = _check_generator_layout()


def stream(seed: int, purpose: Purpose, step: int = 0) -> torch.Generator:
    """A CPU generator for (seed, purpose, step), its whole state drawn from NumPy's `SeedSequence`.

    `torch.Generator.manual_seed` keeps only 32 bits of a seed (seeds 1 and 1 + 2**32 draw the same
    numbers), so any formula over (seed, step) folded into one integer makes some pairs share a
    stream. Here `SeedSequence(entropy=seed, spawn_key=(purpose, step))` hashes all three into the
    624 words of the Mersenne Twister (as NumPy's own `MT19937(SeedSequence)` does): distinct keys
    give distinct, independent streams (a shared stream would take a hash collision over 19968 bits).
    """
    words = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(purpose), int(step))).generate_state(_MT_WORDS, np.uint32)
    generator = torch.Generator()
    state = generator.manual_seed(int(words[0])).get_state().numpy().copy()  # left = 1, next = 0: twist before the first draw
    state[_MT_OFFSET : _MT_OFFSET + 8 * _MT_WORDS] = words.astype(np.uint64).view(np.uint8)
    generator.set_state(torch.from_numpy(state))
    return generator


def step_generator(seed: int, step: int) -> torch.Generator:
    """The training batch stream of (trial seed, step): batches do not depend on history."""
    return stream(seed, Purpose.TRAIN, step)


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
