"""Learning-rate schedules of the papers, applied by the training loop (pure PyTorch, no Ray).

Every option lives in the optimizer spec (raylab.spec.config.OptimizerSpec; table in docs/protocol.md):
- decay on plateau: every lr x `lr_decay_on_plateau` once more than `lr_decay_patience` evaluations
  in a row did not improve the primary metric (nnRNN PTB: x0.5, patience 0; IndRNN: x0.1 or x0.2);
  with `lr_decay_patience_halving` the patience halves after each drop, as the IndRNN PyTorch code;
- step decay: every lr x `lr_step_factor` every `lr_step_every` steps (IndRNN adding: x0.1 / 20,100);
- `reload_best_at_drop`: at each drop, go back to the best evaluation's weights ("model", the Theano
  code) or weights and optimizer state ("model_and_optimizer", the PyTorch code) before lowering lr;
- `lr_stop_below`: training stops after the drop that takes every lr below this (IndRNN: 1e-6).

What these add to a trial's state (drops so far, the stop, the best optimizer state) is saved in the
loop's checkpoint under "schedule", so a restored trial continues the same schedule.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from raylab.spec.config import OptimizerSpec


@dataclass
class ScheduleState:
    drops: int = 0  # lr drops so far, by plateau or by step
    stopped: bool = False  # an lr fell below `lr_stop_below`: the loop ends
    best_optimizer: dict | None = None  # optimizer state at the best evaluation ("model_and_optimizer")


class LrSchedule:
    """The lr schedule of one trial. The loop calls `after_step`, `on_best` and `after_stale_evaluation`.

    The best weights live in the loop's progress (`best_model`), kept whenever `reloads_best`.
    """

    def __init__(self, spec: OptimizerSpec) -> None:
        self.spec = spec
        self.state = ScheduleState()

    @property
    def reloads_best(self) -> bool:
        return self.spec.reload_best_at_drop != "none"

    @property
    def stopped(self) -> bool:
        return self.state.stopped

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.state = ScheduleState(**state) if state else ScheduleState()  # None: a checkpoint from before schedules

    def patience(self) -> int:
        """Stale evaluations tolerated before a plateau drop.

        With halving, after k drops it is 1 + int((P - 1) / 2^k + 0.5) for P = `lr_decay_patience`:
        the PyTorch code's `patience > int(pThre / reduced + 0.5)` with pThre = P - 1, its counter
        leaving out the current evaluation (Indrnn_mnist_train.py, train_language.py).
        """
        if not self.spec.lr_decay_patience_halving:
            return self.spec.lr_decay_patience
        return 1 + int((self.spec.lr_decay_patience - 1) / 2**self.state.drops + 0.5)

    def on_best(self, optimizer: torch.optim.Optimizer) -> None:
        """A new best evaluation (the loop snapshots the weights)."""
        if self.spec.reload_best_at_drop == "model_and_optimizer":
            self.state.best_optimizer = copy.deepcopy(optimizer.state_dict())

    def after_stale_evaluation(self, optimizer: torch.optim.Optimizer, model: nn.Module, progress: Any) -> None:
        """Drop on a plateau once `progress.stale_evals` exceeds the patience."""
        if self.spec.lr_decay_on_plateau is not None and progress.stale_evals > self.patience():
            self.drop(self.spec.lr_decay_on_plateau, optimizer, model, progress)

    def after_step(self, optimizer: torch.optim.Optimizer, model: nn.Module, progress: Any) -> None:
        """Step decay after optimizer step `progress.step`, before that step's evaluation and checkpoint."""
        if self.spec.lr_step_every is not None and progress.step % self.spec.lr_step_every == 0:
            self.drop(self.spec.lr_step_factor, optimizer, model, progress)

    def drop(self, factor: float, optimizer: torch.optim.Optimizer, model: nn.Module, progress: Any) -> None:
        """Every group's lr x factor, after going back to the best evaluation if asked to."""
        lrs = [group["lr"] * factor for group in optimizer.param_groups]
        if self.reloads_best and progress.best_model is not None:
            model.load_state_dict(progress.best_model)
            if self.state.best_optimizer is not None:
                # a copy: load_state_dict keeps the tensors it is given, and later steps would alter the snapshot
                optimizer.load_state_dict(copy.deepcopy(self.state.best_optimizer))  # brings back the lr of then: set below
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        progress.stale_evals = 0
        self.state.drops += 1
        if self.spec.lr_stop_below is not None and max(lrs) < self.spec.lr_stop_below:
            self.state.stopped = True
