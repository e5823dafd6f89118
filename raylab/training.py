"""The one training loop. Ray-free: `trainable.py` adapts it to Ray Tune's report and checkpoints.

`run_trial(trial, report, restored)` trains the resolved trial dict (see `sweep.py`) and calls
`report(metrics, checkpoint)` at every evaluation, with flat `split/name` metric keys and a
checkpoint dict from which a retried trial continues exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from raylab.config import OptimizerSpec, TrainingSpec
from raylab.metrics import metric_mode
from raylab.model import SequenceModel, build_model, detach_state
from raylab.optim import build_optimizer
from raylab.registry import build
from raylab.schedules import LrSchedule
from raylab.tasks import TASKS
from raylab.tasks.protocol import Task
from raylab.typecheck import from_mapping

Report = Callable[[dict[str, Any], "dict[str, Any] | None"], None]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from the trial's seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


@dataclass
class Schedule:
    total_steps: int
    eval_every_steps: int
    steps_per_epoch: int | None

    @classmethod
    def of(cls, training: TrainingSpec, task: Task) -> Schedule:
        if training.epochs is not None:
            per_epoch = task.steps_per_epoch
            return cls(training.epochs * per_epoch, training.eval_every * per_epoch, per_epoch)
        return cls(training.steps, training.eval_every, task.steps_per_epoch)

    def position(self, step: int) -> dict[str, float]:
        position = {"step": step}
        if self.steps_per_epoch:
            position["epoch"] = step / self.steps_per_epoch
        return position


@dataclass
class Progress:
    """Everything besides model and optimizer that a checkpoint must restore."""

    step: int = 0
    best_value: float | None = None
    best_model: dict | None = None
    train_sums: dict[str, float] = field(default_factory=dict)
    train_count: int = 0
    stale_evals: int = 0  # evaluations in a row that did not improve the primary metric

    def add_train(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.train_sums[name] = self.train_sums.get(name, 0.0) + value
        self.train_count += 1

    def pop_train_means(self) -> dict[str, float]:
        means = {f"train/{k}": v / self.train_count for k, v in self.train_sums.items()} if self.train_count else {}
        self.train_sums, self.train_count = {}, 0
        return means


def pick_device() -> torch.device:
    """CUDA when Ray gave this trial a GPU (Ray hides GPUs from trials that asked for none)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def build_trial(trial: dict, optimizer_spec: OptimizerSpec, device: torch.device, data_dir: str | None) -> tuple[Task, SequenceModel, torch.optim.Optimizer]:
    task = build(TASKS, trial["task"], "task")
    task.setup(device, data_dir)
    model = build_model(task, trial["cell"], trial["hidden_size"]).to(device)
    return task, model, build_optimizer(model, optimizer_spec)


def evaluate_splits(task: Task, model: nn.Module, splits: tuple[str, ...]) -> dict[str, float]:
    metrics = {}
    for split in splits:
        metrics.update({f"{split}/{name}": value for name, value in task.evaluate(model, split).items()})
    return metrics


def run_trial(trial: dict, report: Report, restored: dict | None = None, data_dir: str | None = None, device: torch.device | None = None) -> None:
    """Train one resolved trial to its budget, reporting and checkpointing at each evaluation."""
    device = device or pick_device()
    seed_everything(trial["seed"])
    optimizer_spec = from_mapping(OptimizerSpec, trial["optimizer"], "optimizer")
    task, model, optimizer = build_trial(trial, optimizer_spec, device, data_dir)
    schedule = Schedule.of(from_mapping(TrainingSpec, trial["training"], "training"), task)
    progress = Progress()
    lr_schedule = LrSchedule(optimizer_spec)  # plateau and step decay, reloads, the stop (raylab.schedules)
    if restored is not None:
        model.load_state_dict(restored["model"])
        optimizer.load_state_dict(restored["optimizer"])
        progress = Progress(**restored["progress"])
        lr_schedule.load_state_dict(restored.get("schedule"))
        torch.set_rng_state(restored["torch_rng"])  # e.g. dropout masks continue as uninterrupted
    mode = metric_mode(task.primary_metric)

    def checkpoint() -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "progress": dataclasses.asdict(progress), "torch_rng": torch.get_rng_state(), "schedule": lr_schedule.state_dict()}

    state = None
    model.train()
    while progress.step < schedule.total_steps and not lr_schedule.stopped:
        batch = task.train_batch(progress.step, trial["seed"])
        state = None if batch.reset_state else detach_state(state)
        outputs, state = model(batch.inputs, state)
        loss = task.loss(outputs, batch.targets)
        penalty = model.penalty()
        objective = loss if penalty is None else loss + penalty
        if not torch.isfinite(objective):
            # A diverged trial is a result, not a crash: report it and stop without retrying.
            report({**schedule.position(progress.step), "train/loss": float(loss.detach()), "diverged": 1}, None)
            return
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if optimizer_spec.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), optimizer_spec.clip_grad_norm)
        if optimizer_spec.clip_grad_value is not None:
            nn.utils.clip_grad_value_(model.parameters(), optimizer_spec.clip_grad_value)
        optimizer.step()
        model.after_optimizer_step()
        progress.step += 1
        progress.add_train({"loss": loss.item(), **task.batch_metrics(outputs.detach(), batch.targets)})
        lr_schedule.after_step(optimizer, model, progress)  # step decay, before this step's checkpoint

        if progress.step % schedule.eval_every_steps == 0 or progress.step == schedule.total_steps or lr_schedule.stopped:
            metrics = {**schedule.position(progress.step), **progress.pop_train_means(), **evaluate_splits(task, model, task.eval_splits)}
            value = metrics.get(task.primary_metric, math.nan)
            if is_better(value, progress.best_value, mode):
                progress.best_value = value
                keep = task.final_splits or lr_schedule.reloads_best
                progress.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()} if keep else None
                progress.stale_evals = 0
                lr_schedule.on_best(optimizer)
            else:
                progress.stale_evals += 1
                lr_schedule.after_stale_evaluation(optimizer, model, progress)
            report(metrics, checkpoint())

    if task.final_splits and progress.best_model is not None:
        model.load_state_dict(progress.best_model)  # the best-validation model goes to the test set
        report({**schedule.position(progress.step), **evaluate_splits(task, model, task.final_splits)}, None)
