"""A user task: echo the symbol seen `lag` steps ago, at every step (follows raylab.tasks.protocol.Task)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raylab.tasks.protocol import EVAL_SEED, Batch, Purpose, evaluate_batches, step_generator, stream


class EchoTask:
    """Inputs are random symbols, one-hot; the target at step t is the symbol of step t - lag.

    Steps before `lag` have no target and are left out of the loss. Chance accuracy: 1 / n_symbols.
    """

    readout_mode = "all"
    steps_per_epoch = None  # fresh data every step
    primary_metric = "val/loss"
    eval_splits = ("val",)
    final_splits: tuple[str, ...] = ()

    def __init__(self, lag: int = 5, length: int = 30, n_symbols: int = 4, batch_size: int = 16, eval_size: int = 200) -> None:
        if not 0 < lag < length:
            raise ValueError(f"lag must be in (0, length), got lag={lag}, length={length}")
        self.lag, self.length, self.n_symbols = lag, length, n_symbols
        self.batch_size, self.eval_size = batch_size, eval_size
        self.input_size = self.output_size = n_symbols
        self.baselines = {"acc": 1 / n_symbols}  # a memoryless guess; drawn dashed by `raylab plot`
        self.device = torch.device("cpu")
        self._val: list[Batch] = []

    def _sequences(self, generator: torch.Generator, size: int) -> Batch:
        symbols = torch.randint(0, self.n_symbols, (size, self.length), generator=generator)  # (B, T)
        inputs = F.one_hot(symbols, self.n_symbols).float()  # (B, T, S)
        return Batch(inputs.to(self.device), symbols[:, : -self.lag].to(self.device))  # targets (B, T - lag)

    def setup(self, device: torch.device, data_dir: str | None) -> None:
        self.device = device
        self._val = [self._sequences(stream(EVAL_SEED, Purpose.VALIDATION), self.eval_size)]  # never a training stream

    def encoder(self) -> nn.Module:
        return nn.Identity()

    def readout(self, hidden_size: int) -> nn.Module:
        return nn.Linear(hidden_size, self.n_symbols)

    def train_batch(self, step: int, seed: int) -> Batch:
        return self._sequences(step_generator(seed, step), self.batch_size)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        logits = outputs[:, self.lag :]  # (B, T - lag, S): steps that have something to echo
        return F.cross_entropy(logits.reshape(-1, self.n_symbols), targets.reshape(-1))

    def batch_metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        return {"acc": (outputs[:, self.lag :].argmax(-1) == targets).float().mean().item()}

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        return evaluate_batches(model, self, self._val)

    def metric_names(self) -> tuple[str, ...]:
        return ("loss", "acc")
