"""The IndRNN lr schedules (raylab.networks.schedules): step decay, reloads of the best state, halving patience, stop."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

from raylab.spec.config import ConfigError, OptimizerSpec
from raylab.networks.schedules import LrSchedule
from raylab.training.loop import Progress, run_trial
from raylab.spec.typecheck import from_mapping


def authors_plateau_drops(improved: list[bool], p_thre: int, halving: bool) -> list[int]:
    """Evaluation indices where the IndRNN code drops the lr, its loop transcribed.

    PyTorch (Indrnn_mnist_train.py, train_language.py): `elif patience > int(pThre / reduced + 0.5)`
    with `reduced` doubling at each drop; Theano (penntree_*_rernn.py): `elif patience > pThre`.
    """
    drops, patience, reduced = [], 0, 1
    for index, better in enumerate(improved):
        threshold = int(p_thre / reduced + 0.5) if halving else p_thre
        if better:
            patience = 0
        elif patience > threshold:
            reduced, patience = reduced * 2, 0
            drops.append(index)
        else:
            patience += 1
    return drops


def our_plateau_drops(improved: list[bool], spec: OptimizerSpec) -> list[int]:
    schedule, progress = LrSchedule(spec), Progress()
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    drops = []
    for index, better in enumerate(improved):
        if better:
            progress.stale_evals = 0
        else:
            progress.stale_evals += 1
            before = schedule.state.drops
            schedule.after_stale_evaluation(optimizer, nn.Identity(), progress)
            if schedule.state.drops > before:
                drops.append(index)
    return drops


@pytest.mark.parametrize("p_thre", [0, 1, 3, 5, 20])
@pytest.mark.parametrize("halving", [False, True])
def test_plateau_drops_where_the_authors_code_drops(p_thre, halving):
    """lr_decay_patience = pThre + 1: the code's counter leaves out the current evaluation."""
    rng = random.Random(p_thre)
    improved = [True] + [rng.random() < 0.08 for _ in range(600)]
    spec = OptimizerSpec(lr_decay_on_plateau=0.1, lr_decay_patience=p_thre + 1, lr_decay_patience_halving=halving)
    expected = authors_plateau_drops(improved, p_thre, halving)
    assert len(expected) >= 3  # the sequences do exercise several drops
    assert our_plateau_drops(improved, spec) == expected


def test_reload_of_the_best_weights_and_optimizer_state_at_a_drop():
    model = nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    spec = OptimizerSpec(name="adam", lr=1e-2, lr_decay_on_plateau=0.2, reload_best_at_drop="model_and_optimizer")
    schedule, progress = LrSchedule(spec), Progress()

    def train_step():
        optimizer.zero_grad()
        model(torch.ones(4, 2)).square().mean().backward()
        optimizer.step()

    train_step()
    progress.best_model = {k: v.clone() for k, v in model.state_dict().items()}
    schedule.on_best(optimizer)
    best_weight = model.weight.detach().clone()
    for _ in range(3):
        train_step()
    assert not torch.equal(model.weight, best_weight)
    progress.stale_evals = 1
    schedule.after_stale_evaluation(optimizer, model, progress)
    assert torch.equal(model.weight, best_weight)
    assert optimizer.state[model.weight]["step"] == 1  # Adam's moments are those of the best step
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)  # the lr of now, x 0.2: not the best's
    for _ in range(3):
        train_step()
    progress.stale_evals = 1
    schedule.after_stale_evaluation(optimizer, model, progress)  # a second drop, no better state since
    assert torch.equal(model.weight, best_weight) and optimizer.state[model.weight]["step"] == 1  # the snapshot was not altered
    assert optimizer.param_groups[0]["lr"] == pytest.approx(4e-4) and schedule.state.drops == 2


def test_weights_only_reload_keeps_the_optimizer_state():
    """The Theano code resets the weights but not Adam's moments (set_all_param_values only)."""
    model = nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    schedule, progress = LrSchedule(OptimizerSpec(lr_decay_on_plateau=0.2, reload_best_at_drop="model")), Progress()
    progress.best_model = {k: v.clone() for k, v in model.state_dict().items()}
    schedule.on_best(optimizer)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.ones(4, 2)).sum().backward()
        optimizer.step()
    progress.stale_evals = 1
    schedule.after_stale_evaluation(optimizer, model, progress)
    assert torch.equal(model.weight, progress.best_model["weight"]) and optimizer.state[model.weight]["step"] == 2
    assert schedule.state.best_optimizer is None


def adding_trial(optimizer: dict, steps: int, eval_every: int) -> dict:
    return {
        "task": {"name": "adding", "length": 10, "batch_size": 4, "eval_size": 8},
        "cell": {"name": "lstm"},
        "hidden_size": 4,
        "seed": 0,
        "optimizer": {"name": "adam", "lr": 1e-3, **optimizer},
        "training": {"steps": steps, "eval_every": eval_every},
    }


def run(trial: dict, restored: dict | None = None) -> list[tuple[dict, dict | None]]:
    reports = []
    # a deep copy: the checkpoint holds the live tensors (the trainable saves it to disk at once)
    run_trial(trial, lambda metrics, checkpoint: reports.append((metrics, copy.deepcopy(checkpoint))), restored, None, torch.device("cpu"))
    return reports


def lrs(checkpoint: dict) -> list[float]:
    return [group["lr"] for group in checkpoint["optimizer"]["param_groups"]]


def test_step_decay_and_the_stop_in_the_loop():
    """x0.1 every 3 steps from 1e-3; the drop to 1e-6 at step 9 is below 2e-6: the trial ends there."""
    reports = run(adding_trial({"lr_step_every": 3, "lr_stop_below": 2e-6}, steps=100, eval_every=2))
    assert [m["step"] for m, _ in reports] == [2, 4, 6, 8, 9]  # the stop forces a last evaluation
    assert [lrs(c)[0] for _, c in reports] == pytest.approx([1e-3, 1e-4, 1e-5, 1e-5, 1e-6])  # drops at 3, 6, 9
    assert reports[-1][1]["schedule"]["stopped"] and reports[-1][1]["schedule"]["drops"] == 3
    assert reports[-1][0]["end"] == "lr_stop" and not any("end" in m for m, _ in reports[:-1])  # why it ended, for its status
    assert all(m["report_format"] == 2 for m, _ in reports)


def test_a_restored_trial_continues_the_schedule():
    """Drops, stop and the best optimizer state travel in the checkpoint's "schedule" entry."""
    options = {"lr_decay_on_plateau": 0.5, "reload_best_at_drop": "model_and_optimizer", "lr_step_every": 5, "lr_stop_below": 1e-5}
    trial = adding_trial(options, steps=60, eval_every=2)
    straight = run(trial)
    assert straight[-1][1]["schedule"]["stopped"] and straight[-1][0]["step"] < 60
    middle = straight[3][1]
    assert middle["schedule"]["drops"] > 0 and middle["schedule"]["best_optimizer"] is not None
    resumed = run(trial, middle)
    assert [m["step"] for m, _ in resumed] == [m["step"] for m, _ in straight[4:]]
    assert [lrs(c) for _, c in resumed] == [lrs(c) for _, c in straight[4:]]
    assert [c["schedule"]["drops"] for _, c in resumed] == [c["schedule"]["drops"] for _, c in straight[4:]]


def test_a_checkpoint_from_before_schedules_still_restores():
    straight = run(adding_trial({}, steps=4, eval_every=2))
    old = {k: v for k, v in straight[0][1].items() if k != "schedule"}
    assert [m["step"] for m, _ in run(adding_trial({}, steps=4, eval_every=2), old)] == [4]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"reload_best_at_drop": "model"}, "reload_best_at_drop: needs lr_decay_on_plateau or lr_step_every"),
        ({"lr_stop_below": 1e-6}, "lr_stop_below: needs lr_decay_on_plateau or lr_step_every"),
        ({"lr_decay_patience_halving": True}, "lr_decay_patience_halving: needs lr_decay_on_plateau"),
        ({"lr_step_every": 0}, "lr_step_every: must be positive"),
        ({"lr_step_every": 10, "lr_step_factor": 2.0}, "lr_step_factor: must be in \\(0, 1\\)"),
        ({"reload_best_at_drop": "best", "lr_step_every": 10}, "reload_best_at_drop: 'best' is not one of none"),
    ],
)
def test_schedule_options_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(OptimizerSpec, bad, "optimizer")
