"""How tasks meet the loop and the sweep: carried state, lr decay on plateau, smoke data, task lists."""

import pytest
import torch
import yaml
from torch import nn

from raylab.cells import CELLS
from raylab.spec.config import ConfigError, OptimizerSpec
from raylab.planning.sweep import load_sweep, trial_name
from raylab.networks.schedules import LrSchedule
from raylab.training.loop import Progress, run_trial


class ProbeCell(nn.Module):
    """A linear cell that records, per call, whether it was given a state and if it had a graph."""

    calls: list = []

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear = nn.Linear(input_size, hidden_size)

    def forward(self, inputs, state=None):
        ProbeCell.calls.append(None if state is None else state.requires_grad)
        outputs = torch.tanh(self.linear(inputs))  # (B, T, H)
        final = outputs[:, -1] if state is None else outputs[:, -1] + 0.5 * state
        return outputs, final


def test_the_state_is_carried_detached_across_windows_and_reset_each_epoch(monkeypatch, shared_data):
    monkeypatch.setitem(CELLS, "probe", ProbeCell)
    ProbeCell.calls = []
    trial = {
        "task": {"name": "ptb", "bptt": 100, "batch_size": 4, "eval_batch_size": 2, "subset": 1000},
        "cell": {"name": "probe"},
        "hidden_size": 8,
        "seed": 0,
        "optimizer": {"lr": 0.01},
        "training": {"steps": 6, "eval_every": 3},
    }
    run_trial(trial, lambda metrics, checkpoint: None, None, str(shared_data), torch.device("cpu"))
    epoch = [None, False, False]  # 250 columns: 3 windows; zeros, then the previous state detached
    evaluation = [None, False, False, False, False]  # 500 columns: 5 windows from zeros, carried, no graph
    assert ProbeCell.calls == epoch + evaluation + epoch + evaluation + evaluation  # the last one is the test set


def test_lr_decays_after_each_stalled_evaluation_past_the_patience():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.RMSprop([{"params": [param], "lr": 0.1}, {"params": [], "lr": 0.01}])
    spec = OptimizerSpec(lr_decay_on_plateau=0.5, lr_decay_patience=1)
    progress = Progress(stale_evals=1)
    LrSchedule(spec).after_stale_evaluation(optimizer, param, progress)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.01]  # within the patience
    progress.stale_evals = 2
    LrSchedule(spec).after_stale_evaluation(optimizer, param, progress)
    assert [g["lr"] for g in optimizer.param_groups] == [0.05, 0.005] and progress.stale_evals == 0
    LrSchedule(OptimizerSpec()).after_stale_evaluation(optimizer, param, Progress(stale_evals=9))  # off by default
    assert optimizer.param_groups[0]["lr"] == 0.05


def test_nnrnn_ptb_halving_in_the_loop(shared_data):
    """Patience 0: every evaluation that is not a new best halves the lr (here lr 0 never improves)."""
    trial = {
        "task": {"name": "ptb", "bptt": 50, "batch_size": 4, "subset": 400},
        "cell": {"name": "lstm"},
        "hidden_size": 4,
        "seed": 0,
        "optimizer": {"lr": 1e-30, "lr_decay_on_plateau": 0.5},
        "training": {"steps": 4, "eval_every": 1},
    }
    seen = []
    run_trial(trial, lambda metrics, checkpoint: seen.append(checkpoint), None, str(shared_data), torch.device("cpu"))
    lrs = [c["optimizer"]["param_groups"][0]["lr"] for c in seen if c is not None]
    assert lrs[0] == 1e-30  # the first evaluation is always a best
    assert lrs[1:] == pytest.approx([1e-30 / 2**k for k in (1, 2, 3)], rel=1e-6)  # the loss never moves


@pytest.mark.parametrize("bad, message", [({"lr_decay_on_plateau": 1.5}, "must be in \\(0, 1\\)"), ({"clip_grad_value": 0}, "must be positive")])
def test_new_optimizer_options_are_checked(bad, message):
    from raylab.spec.typecheck import from_mapping

    with pytest.raises(ConfigError, match=message):
        from_mapping(OptimizerSpec, bad, "optimizer")


SWEEP = {
    "name": "two-lengths",
    "task": [{"name": "copy", "delay": 5}, {"name": "copy", "delay": 9}],
    "variants": [{"cell": {"name": "lstm"}}],
    "hidden_sizes": [4],
    "seeds": [0, 1],
    "training": {"steps": 10, "eval_every": 5},
}


def write(tmp_path, data):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_list_of_tasks_is_one_more_grid_axis(tmp_path):
    sweep = load_sweep(write(tmp_path, SWEEP))
    assert [(t["task"]["delay"], t["seed"]) for t in sweep.trials] == [(5, 0), (5, 1), (9, 0), (9, 1)]
    assert len({t["config_hash"] for t in sweep.trials}) == 4
    assert {t["task_label"] for t in sweep.trials} == {"delay=5", "delay=9"}
    assert trial_name(sweep.trials[2]) == "lstm-delay_9-h4-s0"
    single = load_sweep(write(tmp_path, {**SWEEP, "task": SWEEP["task"][0]}))
    assert "task_label" not in single.trials[0]
    assert single.trials[0]["config_hash"] == sweep.trials[0]["config_hash"]  # a list does not change the hash


def test_task_list_errors_name_the_item(tmp_path):
    with pytest.raises(ConfigError, match=r"task\[1\]\.dealy: unknown option"):
        load_sweep(write(tmp_path, {**SWEEP, "task": [{"name": "copy"}, {"name": "copy", "dealy": 3}]}))
    with pytest.raises(ConfigError, match="task: must be a task spec or a non-empty list"):
        load_sweep(write(tmp_path, {**SWEEP, "task": []}))


def test_smoke_mode_shrinks_each_task_with_its_smoke_options(tmp_path):
    data = {**SWEEP, "task": [{"name": "copy", "delay": 5}, {"name": "copy", "delay": 9}, {"name": "mnist", "batch_size": 100}]}
    sweep = load_sweep(write(tmp_path, data), smoke=True)
    tasks = [t["task"] for t in sweep.trials]  # the two copy tasks became one: same smoke delay
    assert {"name": "copy", "delay": 10, "eval_size": 10}.items() <= tasks[0].items()  # with the other defaults written out
    assert {"name": "mnist", "subset": 16, "batch_size": 4, "eval_batch_size": 8, "pixels_per_step": 28}.items() <= tasks[1].items()
    assert all(t["training"]["steps"] == 4 for t in sweep.trials)
