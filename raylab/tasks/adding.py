"""Adding problem of the IndRNN paper (IndRNN reference §3.1)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raylab.tasks.protocol import EVAL_SEED, Batch, Purpose, evaluate_batches, step_generator, stream

ADDING_BASELINE_MSE = 1.0 / 6.0  # Var(U1 + U2) = 2/12: always answering 1


def adding_sequences(generator: torch.Generator, batch_size: int, length: int) -> tuple[Tensor, Tensor]:
    """Inputs (B, T, 2) and targets (B, 1).

    Channel 0 is U(0, 1) noise; channel 1 marks one position in [0, T/2) and one in [T/2, T).
    The target is the sum of the two marked values.
    """
    values = torch.rand(batch_size, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (batch_size,), generator=generator)
    second = torch.randint(half, length, (batch_size,), generator=generator)
    markers = torch.zeros(batch_size, length)
    rows = torch.arange(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = (values * markers).sum(dim=1, keepdim=True)
    return torch.stack([values, markers], dim=-1), targets


EvalData = Literal["fresh", "fixed"]
ReadoutInit = Literal["glorot", "default"]


class AddingTask:
    """Adding problem: output the sum of two marked values in a length-T sequence (MSE).

    Fresh data every step; the baseline of always answering 1 has MSE 1/6 (about 0.167).
    `eval_data` says which `eval_size` sequences each evaluation scores:
    - "fresh" (default): new ones at every evaluation, as the IndRNN code (adding.py draws 1,000 with
      numpy at every evaluation, reference §3.1). Here the set that follows training batch s is drawn
      from the stream (EVAL_SEED, fresh validation, s): the same for every trial and seed at a given step,
      never a training batch's stream, and the
      same again when a trial is restored from a checkpoint;
    - "fixed": one set drawn once, the same at every evaluation of every trial (smoother curves).
    `readout_init` is the readout Linear(N, 1)'s initialisation: "glorot" (default), Glorot-uniform
    weight and zero bias, Lasagne's DenseLayer defaults in the Theano adding.py behind the published
    curves (reference §3.1); "default", nn.Linear's own (Kaiming-uniform a=√5, bias U(±1/√N)).
    """

    input_size = 2
    output_size = 1
    readout_mode: Literal["all", "last"] = "last"
    steps_per_epoch = None
    primary_metric = "val/loss"
    eval_splits = ("val",)
    final_splits: tuple[str, ...] = ()
    baselines: ClassVar[dict[str, float]] = {"loss": ADDING_BASELINE_MSE}  # the IndRNN figures' 0.167 line
    smoke_options: ClassVar[dict] = {"length": 40, "batch_size": 4, "eval_size": 8}  # --smoke: short sequences, small batches

    def __init__(
        self,
        length: int = 100,
        batch_size: int = 32,
        eval_size: int = 1000,
        eval_data: EvalData = "fresh",
        readout_init: ReadoutInit = "glorot",
    ) -> None:
        if length < 2:
            raise ValueError(f"length must be at least 2, got {length}")
        for name, value in (("batch_size", batch_size), ("eval_size", eval_size)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        self.length, self.batch_size, self.eval_size, self.eval_data = length, batch_size, eval_size, eval_data
        self.readout_init = readout_init
        self.device = torch.device("cpu")
        self._val_batches: list[Batch] = []
        self._last_train_step = -1  # the fresh validation set after training batch s is drawn from s

    def setup(self, device: torch.device, data_dir: str | None) -> None:
        self.device = device
        if self.eval_data == "fixed":
            self._val_batches = self._eval_batches(stream(EVAL_SEED, Purpose.VALIDATION))

    def _eval_batches(self, generator: torch.Generator) -> list[Batch]:
        chunk = min(self.eval_size, 250)
        return [
            self._batch(*adding_sequences(generator, min(chunk, self.eval_size - start), self.length))
            for start in range(0, self.eval_size, chunk)
        ]

    def _batch(self, inputs: Tensor, targets: Tensor) -> Batch:
        return Batch(inputs.to(self.device), targets.to(self.device))

    def encoder(self) -> nn.Module:
        return nn.Identity()

    def readout(self, hidden_size: int) -> nn.Module:
        layer = nn.Linear(hidden_size, 1)
        if self.readout_init == "glorot":
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        return layer

    def train_batch(self, step: int, seed: int) -> Batch:
        self._last_train_step = step
        return self._batch(*adding_sequences(step_generator(seed, step), self.batch_size, self.length))

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(outputs, targets)

    def batch_metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return {}

    def metric_names(self) -> tuple[str, ...]:
        return ("loss",)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        if self.eval_data == "fresh":
            return evaluate_batches(model, self, self._eval_batches(stream(EVAL_SEED, Purpose.FRESH_VALIDATION, self._last_train_step)))
        return evaluate_batches(model, self, self._val_batches)
