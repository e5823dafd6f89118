"""IndRNN's frame-wise batch normalisation (IndRNN reference §1.5 item 2, §3.3-3.4)."""

from __future__ import annotations

import math

import pytest
import torch

from raylab.cells import IndRNN
from raylab.cells.indrnn import FrameNorm
from raylab.networks.model import count_parameters
from raylab.training.loop import run_trial


def frame_cell(**options) -> IndRNN:
    torch.manual_seed(0)
    return IndRNN(3, 6, **{"num_layers": 2, "batch_norm": "before", "batch_norm_stats": "frame", **options})


def test_each_time_step_is_normalised_over_the_batch():
    torch.manual_seed(0)
    norm = FrameNorm(4, window=5)
    x = torch.randn(6, 32, 4) * torch.arange(1.0, 7.0)[:, None, None] + torch.arange(6.0)[:, None, None]  # (T, B, N): per-step scale and shift
    y = norm(x, start=0)
    torch.testing.assert_close(y.mean(1), torch.zeros(6, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(6, 4), atol=1e-3, rtol=0)
    assert y.mean((1, 2)).abs().max() < 1e-5  # not the sequence-wise result, where late steps would sit above 0


def test_inside_the_cell_the_recurrence_input_is_normalised_per_step():
    cell = frame_cell(num_layers=1).train()
    seen = []
    cell.recurrences[0].norm.register_forward_hook(lambda module, args, out: seen.append(out))
    cell(torch.randn(16, 5, 3) * 3 + 1)
    torch.testing.assert_close(seen[0].mean(1), torch.zeros(5, 6), atol=1e-5, rtol=0)  # gamma 1, beta 0


def test_running_statistics_are_updated_per_position():
    norm = FrameNorm(3, window=4)
    x = torch.randn(5, 8, 3)
    norm(x, start=2)
    rows = slice(2, 7)
    torch.testing.assert_close(norm.running_mean[rows], 0.1 * x.mean(1))
    torch.testing.assert_close(norm.running_var[rows], 0.9 + 0.1 * x.var(1, unbiased=True))
    untouched = torch.ones(17, dtype=torch.bool)
    untouched[rows] = False
    assert norm.running_mean.shape == (17, 3)  # 4 * window + 1 rows, as the author's code
    assert torch.equal(norm.running_mean[untouched], torch.zeros(12, 3)) and torch.equal(norm.running_var[untouched], torch.ones(12, 3))


def test_start_is_capped_at_twice_the_window_and_long_windows_fail():
    norm = FrameNorm(2, window=3)
    assert norm.rows(100, 5) == slice(6, 11)
    assert norm.rows(1, 4) == slice(1, 5)
    with pytest.raises(ValueError, match="windows of up to 7 steps"):
        norm.rows(0, 8)


def test_position_travels_in_the_state_and_resets_with_none():
    cell = frame_cell().train()
    norm = cell.recurrences[0].norm
    _, state = cell(torch.randn(4, 5, 3))
    assert int(state[-1]) == 5 and len(state) == 3  # two layers' hidden states, then the position
    cell.eval()
    cell(torch.randn(4, 2, 3))  # an evaluation pass between training windows starts its own stream
    cell.train()
    before = norm.running_mean.clone()
    _, state = cell(torch.randn(4, 3, 3), state)
    assert int(state[-1]) == 8
    changed = (norm.running_mean != before).any(1).nonzero().flatten().tolist()
    assert changed == [5, 6, 7]  # the carried window used rows [5, 8)
    _, state = cell(torch.randn(4, 2, 3))
    assert int(state[-1]) == 2


def test_eval_uses_the_running_statistics_of_the_positions():
    cell = frame_cell(num_layers=1)
    norm = cell.recurrences[0].norm
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn_like(norm.running_mean))
        norm.running_var.copy_(torch.rand_like(norm.running_var) + 0.5)
    cell.eval()
    x = torch.randn(4, 3, 3)
    _, state = cell(torch.randn(4, 2, 3))
    seen = []
    norm.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    out, _ = cell(x, state)
    z, y = seen[0]
    expected = (z - norm.running_mean[2:5, None]) / torch.sqrt(norm.running_var[2:5, None] + 1e-5)
    torch.testing.assert_close(y, expected)
    alone, _ = cell(x[:1], tuple(s[:1] if s.dim() else s for s in state))  # no batch statistics: a sample alone gives the same
    torch.testing.assert_close(alone, out[:1])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("architecture, batch_norm", [("plain", "before"), ("residual", "after")])
def test_fast_path_equals_plain_loop_with_a_carried_position(training, architecture, batch_norm):
    cell = frame_cell(architecture=architecture, batch_norm=batch_norm, frame_window=4)
    _, state = cell(torch.randn(4, 6, 3))  # warms the running statistics and gives position 6
    cell.train(training)
    inputs = torch.randn(4, 5, 3)
    fast, fast_state = cell(inputs, state)
    slow, slow_state = cell.forward_reference(inputs, state)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_state, slow_state):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_parameters_are_the_sequence_wise_ones():
    for architecture in ("plain", "residual"):
        sequence = IndRNN(3, 6, architecture=architecture, batch_norm="before")
        frame = IndRNN(3, 6, architecture=architecture, batch_norm="before", batch_norm_stats="frame")
        assert count_parameters(frame) == count_parameters(sequence)
        assert [n for n, _ in frame.named_parameters()] == [n for n, _ in sequence.named_parameters()]


def test_frame_stats_need_batch_norm():
    with pytest.raises(ValueError, match="needs batch_norm before or after"):
        IndRNN(3, 6, batch_norm_stats="frame")


def test_copy_task_through_the_trainable():
    trial = {
        "task": {"name": "copy", "delay": 4, "batch_size": 3, "eval_size": 6},
        "cell": {"name": "indrnn", "batch_norm": "before", "batch_norm_stats": "frame", "frame_window": 30},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"steps": 3, "eval_every": 3},
        "hidden_size": 8,
        "seed": 0,
    }
    reports = []
    run_trial(trial, lambda metrics, checkpoint: reports.append(metrics), device=torch.device("cpu"))
    assert reports[-1]["step"] == 3 and math.isfinite(reports[-1]["val/loss"])


def test_ptb_through_the_trainable_carries_the_position(shared_data):
    """Windows of 20 over a tiny subset: training state carried across windows, evaluation in between."""
    trial = {
        "task": {"name": "ptb", "bptt": 20, "batch_size": 4, "eval_batch_size": 4, "subset": 400},
        "cell": {"name": "indrnn", "num_layers": 2, "batch_norm": "before", "batch_norm_stats": "frame", "frame_window": 20},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"steps": 6, "eval_every": 2},
        "hidden_size": 8,
        "seed": 0,
    }
    reports = []
    run_trial(trial, lambda metrics, checkpoint: reports.append((metrics, checkpoint)), None, str(shared_data), torch.device("cpu"))
    metrics, checkpoint = [r for r in reports if r[1] is not None][-1]
    assert metrics["step"] == 6 and math.isfinite(metrics["val/loss"]) and math.isfinite(reports[-1][0]["test/loss"])
    running = checkpoint["model"]["cell.recurrences.0.norm.running_mean"]
    # 100 columns = windows at 0, 20, 40, 60, 80; starts are capped at 2 * 20, so rows 0-59 are used
    assert running.shape == (81, 8) and running[:60].abs().sum(1).gt(0).all() and running[60:].eq(0).all()


@pytest.mark.parametrize("batch_norm", ["after", "before", "none"])
@pytest.mark.parametrize("architecture", ["plain", "residual"])
def test_a_sequence_split_into_windows_with_the_carried_state_is_the_whole_sequence(batch_norm, architecture):
    """Language modelling carries the state from one window to the next: in evaluation (BN on its running
    statistics, the same at every position) two windows must give what one long window gives. With BN
    after the recurrence the carried state was the normalised output, not h_T, and the second window
    started from the wrong state."""
    torch.manual_seed(0)
    cell = IndRNN(3, 6, num_layers=2, architecture=architecture, batch_norm=batch_norm)
    with torch.no_grad():  # running statistics far from (0, 1), so that normalising changes the state
        for norm in (r.norm for r in cell.recurrences if r.norm is not None):
            norm.running_mean.uniform_(0.5, 1.5)
            norm.running_var.uniform_(2.0, 4.0)
    cell.eval()
    inputs = torch.randn(4, 10, 3)  # (B, T, I)
    whole, whole_state = cell(inputs)
    first, state = cell(inputs[:, :6])
    second, split_state = cell(inputs[:, 6:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    for split, reference in zip(split_state, whole_state):
        torch.testing.assert_close(split, reference)
