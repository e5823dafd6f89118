"""Copy task of the nnRNN paper (nnRNN reference §6.1)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raylab.tasks.protocol import EVAL_SEED, Batch, Purpose, evaluate_batches, step_generator, stream

BLANK, CUE = 0, 9


def copy_sequences(generator: torch.Generator, batch_size: int, delay: int, copy_length: int = 10, n_symbols: int = 8) -> tuple[Tensor, Tensor]:
    """Integer inputs and targets, each (B, delay + 2 * copy_length).

    input  = [a_1..a_c, 0 x (delay - 1), 9, 0 x c]
    target = [0 x (delay + c), a_1..a_c]
    so the cue sits at 0-based index delay + c - 1 and the recall window is the last c steps.
    """
    length = delay + 2 * copy_length
    symbols = torch.randint(1, n_symbols + 1, (batch_size, copy_length), generator=generator)
    inputs = torch.full((batch_size, length), BLANK, dtype=torch.long)
    targets = torch.full((batch_size, length), BLANK, dtype=torch.long)
    inputs[:, :copy_length] = symbols
    inputs[:, delay + copy_length - 1] = CUE
    targets[:, -copy_length:] = symbols
    return inputs, targets


def copy_baseline(delay: int, copy_length: int = 10, n_symbols: int = 8) -> float:
    """Loss of predicting blanks, then uniform symbols: c ln(n) / (T + 2c); 0.094520 at T=200."""
    return copy_length * math.log(n_symbols) / (delay + 2 * copy_length)


class CopyTask:
    """Copy task: remember 10 symbols over a delay T, recall them after a cue (nnRNN §6.1).

    Loss is the cross-entropy averaged over all T+20 positions (blanks included), so the
    memoryless baseline is 10 ln 8 / (T + 20). Accuracy is over the 10 recall positions only.
    """

    readout_mode: Literal["all", "last"] = "all"
    steps_per_epoch = None
    primary_metric = "val/loss"
    eval_splits = ("val",)
    final_splits: tuple[str, ...] = ()
    smoke_options: ClassVar[dict] = {"delay": 10, "eval_size": 10}  # --smoke: short sequences, a small validation set

    def __init__(
        self,
        delay: int = 200,
        copy_length: int = 10,
        n_symbols: int = 8,
        batch_size: int = 10,
        onehot: bool = True,
        variable_delay: bool = False,
        eval_size: int = 1000,
    ) -> None:
        for name, value in (("delay", delay), ("copy_length", copy_length), ("n_symbols", n_symbols), ("batch_size", batch_size), ("eval_size", eval_size)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        self.delay, self.copy_length, self.n_symbols = delay, copy_length, n_symbols
        self.batch_size, self.onehot, self.variable_delay, self.eval_size = batch_size, onehot, variable_delay, eval_size
        self.input_size = n_symbols + 2 if onehot else 1  # symbols, blank and cue
        self.output_size = n_symbols + 1  # blank and symbols; the cue is never a target
        self.device = torch.device("cpu")
        self._val_batches: list[Batch] = []

    @property
    def baseline_loss(self) -> float:
        return copy_baseline(self.delay, self.copy_length, self.n_symbols)

    def metric_names(self) -> tuple[str, ...]:
        return ("loss", "acc")

    @property
    def baselines(self) -> dict[str, float]:
        """Blanks, then a uniform guess over the symbols: the LSTM's plateau in the nnRNN figures."""
        return {"loss": self.baseline_loss, "acc": 1.0 / self.n_symbols}

    def setup(self, device: torch.device, data_dir: str | None) -> None:
        self.device = device
        generator = stream(EVAL_SEED, Purpose.VALIDATION)
        chunk = min(self.eval_size, 250)
        self._val_batches = [
            self._batch(*copy_sequences(generator, min(chunk, self.eval_size - start), self.delay, self.copy_length, self.n_symbols))
            for start in range(0, self.eval_size, chunk)
        ]

    def _batch(self, inputs: Tensor, targets: Tensor) -> Batch:
        if self.onehot:
            features = F.one_hot(inputs, self.n_symbols + 2).float()  # (B, T, n + 2)
        else:
            features = inputs.float().unsqueeze(-1)  # (B, T, 1), the raw symbol as a scalar
        return Batch(features.to(self.device), targets.to(self.device))

    def encoder(self) -> nn.Module:
        return nn.Identity()

    def readout(self, hidden_size: int) -> nn.Module:
        layer = nn.Linear(hidden_size, self.output_size)
        nn.init.xavier_normal_(layer.weight)  # bias keeps PyTorch's default, as in the original
        return layer

    def train_batch(self, step: int, seed: int) -> Batch:
        generator = step_generator(seed, step)
        delay = self.delay
        if self.variable_delay:
            delay = int(torch.randint(1, self.delay + 1, (1,), generator=generator))
        return self._batch(*copy_sequences(generator, self.batch_size, delay, self.copy_length, self.n_symbols))

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs.reshape(-1, self.output_size), targets.reshape(-1))  # mean over B * (T + 20)

    def batch_metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        recall = slice(-self.copy_length, None)
        correct = outputs[:, recall].argmax(-1) == targets[:, recall]
        return {"acc": correct.float().mean()}

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        return evaluate_batches(model, self, self._val_batches)
