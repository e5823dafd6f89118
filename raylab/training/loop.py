"""The one training loop. Ray-free: `trainable.py` adapts it to Ray Tune's report and checkpoints.

`run_trial(trial, report, restored)` trains the resolved trial dict (see `sweep.py`) and calls
`report(metrics, checkpoint)` at every evaluation, with flat `split/name` metric keys and a
checkpoint dict from which a retried trial continues exactly where it stopped.

Every report carries `report_format`, and the last report of a trial that the loop itself ended
carries `end`, why it ended (`raylab.training.ending`): results derive a trial's status from it.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from raylab.spec.config import OptimizerSpec, TrainingSpec
from raylab.training.metrics import metric_mode
from raylab.networks.model import SequenceModel, build_model, detach_state
from raylab.networks.optim import build_optimizer
from raylab.spec.registry import build
from raylab.training.ending import END_BUDGET, END_DIVERGED, END_KEY, END_LR_STOP, FORMAT_KEY, REPORT_FORMAT
from raylab.training.checkpoint import check_entries, pack_carried_state, restore_rng_states, rng_states, unpack_carried_state
from raylab.networks.schedules import LrSchedule
from raylab.tasks import TASKS
from raylab.tasks.protocol import Task
from raylab.spec.typecheck import from_mapping

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
    stale_evals: int = 0  # evaluations in a row that did not improve the primary metric


FINITE_CHECK_EVERY = 50  # steps between host reads of the divergence flag (and at every evaluation)


class StepStats:
    """Training loss and batch metrics summed on the device, and the first step whose objective was not finite.

    Nothing here reads a value back to the host per step: the sums are read once per evaluation and
    the divergence flag every FINITE_CHECK_EVERY steps, so a GPU step queues its kernels without
    waiting (the loop used to sync 3-4 times a step). Sums are float64, as Python floats were.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.first_nonfinite = torch.tensor(-1, device=device)  # 0-based step, -1: none yet
        self.nonfinite_loss = torch.tensor(math.nan, device=device)

    def add(self, step: int, finite: Tensor, loss: Tensor, metrics: dict[str, Tensor | float]) -> None:
        for name, value in {"loss": loss, **metrics}.items():
            value = torch.as_tensor(value, device=self.device).detach().double()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1
        first = finite.logical_not() & (self.first_nonfinite < 0)
        self.first_nonfinite = torch.where(first, step, self.first_nonfinite)
        self.nonfinite_loss = torch.where(first, loss.detach().to(self.nonfinite_loss.dtype), self.nonfinite_loss)

    def pop_means(self) -> dict[str, float]:
        """`train/<name>` means since the last call, read back in one transfer."""
        if not self.count:
            return {}
        names = list(self.sums)
        values = (torch.stack([self.sums[n] for n in names]) / self.count).tolist()
        self.sums, self.count = {}, 0
        return {f"train/{name}": value for name, value in zip(names, values)}

    def diverged_at(self) -> tuple[int, float] | None:
        """(0-based step, its loss) of the first non-finite objective, or None (one host read)."""
        step = int(self.first_nonfinite)
        return None if step < 0 else (step, float(self.nonfinite_loss))


def zero_nonfinite_step(model: nn.Module, finite: Tensor) -> None:
    """Zero the gradients of a step whose objective was not finite, so the weights stay finite until
    the next divergence check stops the trial (orthogonal cells' eigh would fail on NaN weights)."""
    nonfinite = finite.logical_not()
    for parameter in model.parameters():
        if parameter.grad is not None:
            parameter.grad.masked_fill_(nonfinite, 0.0)


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


def set_precision(precision: str) -> None:
    """fp32: full float32 matmuls and cuDNN kernels, as the papers; tf32: allow TensorFloat-32 on GPUs.

    PyTorch allows TF32 in cuDNN by default, which would run the fused LSTM/GRU/RNN kernels in
    reduced precision while the other cells run in fp32. Set per trial: worker processes may be reused.
    """
    mode = "tf32" if precision == "tf32" else "ieee"
    if hasattr(torch.backends.cudnn, "rnn"):  # PyTorch >= 2.9: per-backend switches (a fresh process: "tf32" for cuDNN)
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
        torch.backends.cudnn.rnn.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"


def all_finite(metrics: dict[str, float], splits: tuple[str, ...]) -> bool:
    return all(math.isfinite(v) for k, v in metrics.items() if k.split("/", 1)[0] in splits)


def run_trial(trial: dict, report: Report, restored: dict | None = None, data_dir: str | None = None, device: torch.device | None = None) -> None:
    """Train one resolved trial to its budget, reporting and checkpointing at each evaluation.

    A trial diverges (reports `diverged: 1` and stops, without a checkpoint) when its training
    objective or an evaluation metric is not finite. The last evaluation (budget reached or lr stop)
    reports the final splits in the same report as its validation metrics, with `end`: a scheduler
    that stops the trial on that report cannot drop them.
    """
    device = device or pick_device()
    training = from_mapping(TrainingSpec, trial["training"], "training")
    set_precision(training.precision)
    seed_everything(trial["seed"])
    optimizer_spec = from_mapping(OptimizerSpec, trial["optimizer"], "optimizer")
    task, model, optimizer = build_trial(trial, optimizer_spec, device, data_dir)
    schedule = Schedule.of(training, task)
    progress = Progress()
    state = None  # the hidden state carried across batches (PTB windows), detached at each step
    lr_schedule = LrSchedule(optimizer_spec)  # plateau and step decay, reloads, the stop (raylab.networks.schedules)
    if restored is not None:
        check_entries(restored)
        model.load_state_dict(restored["model"])
        optimizer.load_state_dict(restored["optimizer"])
        progress = Progress(**restored["progress"])
        lr_schedule.load_state_dict(restored.get("schedule"))
        restore_rng_states(restored["rng"], device)  # e.g. dropout masks continue as uninterrupted
        state = unpack_carried_state(restored["carried_state"], device)
    mode = metric_mode(task.primary_metric)
    stats = StepStats(device)

    def send(metrics: dict[str, Any], checkpoint: dict | None) -> None:
        report({**metrics, FORMAT_KEY: REPORT_FORMAT}, checkpoint)

    def checkpoint() -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "progress": dataclasses.asdict(progress),
            "schedule": lr_schedule.state_dict(),
            "rng": rng_states(device),
            "carried_state": pack_carried_state(state),
        }

    def ended() -> str | None:
        """Why the loop ends here, or None while it goes on."""
        if lr_schedule.stopped:
            return END_LR_STOP
        return END_BUDGET if progress.step >= schedule.total_steps else None

    def final_splits() -> dict[str, float]:
        """The final splits on the best-validation model; the live weights are put back afterwards,
        so the checkpoint sent with them holds the trained model, as at every other evaluation."""
        if not task.final_splits or progress.best_model is None:
            return {}
        trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(progress.best_model)
        metrics = evaluate_splits(task, model, task.final_splits)
        model.load_state_dict(trained)
        return metrics

    if ended() is not None:
        # Restored from the checkpoint of the last evaluation (its report may not have been recorded):
        # report the end again; evaluations are deterministic, so the values are those reported before.
        metrics = {**schedule.position(progress.step), **evaluate_splits(task, model, task.eval_splits)}
        send({**metrics, **final_splits(), END_KEY: ended()}, None)
        return

    model.train()
    while ended() is None:
        batch = task.train_batch(progress.step, trial["seed"])
        state = None if batch.reset_state else detach_state(state)
        outputs, state = model(batch.inputs, state)
        loss = task.loss(outputs, batch.targets)
        penalty = model.penalty()
        objective = loss if penalty is None else loss + penalty
        finite = torch.isfinite(objective.detach())  # read back only at checks (StepStats)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        zero_nonfinite_step(model, finite)
        if optimizer_spec.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), optimizer_spec.clip_grad_norm)
        if optimizer_spec.clip_grad_value is not None:
            nn.utils.clip_grad_value_(model.parameters(), optimizer_spec.clip_grad_value)
        optimizer.step()
        model.after_optimizer_step()
        stats.add(progress.step, finite, loss, task.batch_metrics(outputs.detach(), batch.targets))
        progress.step += 1
        lr_schedule.after_step(optimizer, model, progress)  # step decay, before this step's checkpoint

        evaluating = progress.step % schedule.eval_every_steps == 0 or ended() is not None
        if evaluating or progress.step % FINITE_CHECK_EVERY == 0:
            diverged = stats.diverged_at()
            if diverged is not None:
                # A diverged trial is a result, not a crash: report it at its own step and stop without retrying.
                step, value = diverged
                send({**schedule.position(step + 1), "train/loss": value, "diverged": 1, END_KEY: END_DIVERGED}, None)
                return
        if evaluating:
            metrics = {**schedule.position(progress.step), **stats.pop_means(), **evaluate_splits(task, model, task.eval_splits)}
            if not all_finite(metrics, task.eval_splits):
                send({**metrics, "diverged": 1, END_KEY: END_DIVERGED}, None)
                return
            value = metrics[task.primary_metric]
            if is_better(value, progress.best_value, mode):
                progress.best_value = value
                keep = task.final_splits or lr_schedule.reloads_best
                progress.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()} if keep else None
                progress.stale_evals = 0
                lr_schedule.on_best(optimizer)
            else:
                progress.stale_evals += 1
                lr_schedule.after_stale_evaluation(optimizer, model, progress)  # a plateau drop may stop the trial here
            end = ended()
            if end is None:
                send(metrics, checkpoint())
            else:
                saved = checkpoint()  # taken before the final splits are evaluated: a resume sees the same RNG states
                send({**metrics, **final_splits(), END_KEY: end}, saved)
