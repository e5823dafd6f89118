"""Copy-task and adding-problem data: layout, baseline and targets (nnRNN §6.1, IndRNN §3.1)."""

import math

import pytest
import torch

from raylab.tasks.adding import ADDING_BASELINE_MSE, AddingTask, adding_sequences
from raylab.tasks.copying import BLANK, CUE, CopyTask, copy_baseline, copy_sequences


def test_copy_layout_places_symbols_cue_and_recall_window():
    delay, c = 200, 10
    inputs, targets = copy_sequences(torch.Generator().manual_seed(0), 16, delay, c)
    assert inputs.shape == targets.shape == (16, delay + 2 * c)
    symbols = inputs[:, :c]
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert (inputs[:, c : delay + c - 1] == BLANK).all()
    assert (inputs[:, delay + c - 1] == CUE).all()  # 0-based index T + 9
    assert (inputs[:, delay + c :] == BLANK).all()
    assert (targets[:, : delay + c] == BLANK).all()  # the target at the cue step is still blank
    assert torch.equal(targets[:, delay + c :], symbols)


def test_copy_symbols_cover_one_to_eight_uniformly():
    inputs, _ = copy_sequences(torch.Generator().manual_seed(1), 4000, 5)
    counts = torch.bincount(inputs[:, :10].flatten(), minlength=10)
    assert counts[0] == 0 and counts[9] == 0
    assert counts[1:9].float().std() / counts[1:9].float().mean() < 0.05


def test_copy_baseline_matches_the_supplement():
    assert copy_baseline(200) == pytest.approx(0.094520, abs=5e-7)
    assert CopyTask(delay=200).baseline_loss == pytest.approx(10 * math.log(8) / 220)


def test_copy_onehot_batch_and_loss_of_the_memoryless_strategy():
    task = CopyTask(delay=30, batch_size=64)
    task.setup(torch.device("cpu"), None)
    batch = task.train_batch(step=3, seed=7)
    assert batch.inputs.shape == (64, 50, 10) and batch.inputs.sum(-1).eq(1).all()
    # Blanks with certainty, then uniform over the 8 symbols: exactly the baseline loss.
    logits = torch.full((64, 50, 9), -1e9)
    logits[:, :40, BLANK] = 0.0
    logits[:, 40:, 1:] = 0.0
    assert task.loss(logits, batch.targets).item() == pytest.approx(task.baseline_loss, rel=1e-6)
    assert task.batch_metrics(logits, batch.targets)["acc"] < 0.5


def test_batches_depend_only_on_seed_and_step():
    task = CopyTask(delay=10)
    task.setup(torch.device("cpu"), None)
    assert torch.equal(task.train_batch(5, 1).targets, task.train_batch(5, 1).targets)
    assert not torch.equal(task.train_batch(5, 1).targets, task.train_batch(6, 1).targets)
    assert not torch.equal(task.train_batch(5, 1).targets, task.train_batch(5, 2).targets)


def test_variable_delay_draws_lengths_up_to_the_delay():
    task = CopyTask(delay=30, variable_delay=True)
    task.setup(torch.device("cpu"), None)
    lengths = {task.train_batch(step, 0).inputs.shape[1] for step in range(40)}
    assert len(lengths) > 5 and max(lengths) <= 50 and min(lengths) >= 21


def test_adding_targets_are_the_sum_of_the_two_marked_values():
    inputs, targets = adding_sequences(torch.Generator().manual_seed(0), 256, 100)
    values, markers = inputs[..., 0], inputs[..., 1]
    assert inputs.shape == (256, 100, 2) and targets.shape == (256, 1)
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :50].sum(1) == 1).all() and (markers[:, 50:].sum(1) == 1).all()
    marked = values[markers.bool()].view(256, 2)
    torch.testing.assert_close(targets.squeeze(1), marked.sum(1))


def test_adding_baseline_is_the_variance_of_the_sum():
    _, targets = adding_sequences(torch.Generator().manual_seed(3), 20000, 20)
    assert ((targets - 1.0) ** 2).mean().item() == pytest.approx(ADDING_BASELINE_MSE, rel=0.03)
    assert AddingTask(length=100).readout_mode == "last"


@pytest.mark.parametrize("options, message", [({"delay": 0}, "delay must be positive"), ({"batch_size": -1}, "batch_size")])
def test_bad_copy_options_are_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        CopyTask(**options)


def test_no_two_trials_or_purposes_share_a_random_stream():
    """Issue 18 item 14: streams were seeded with seed * 1000003 + step (and torch keeps 32 bits of a seed)."""
    from raylab.tasks.protocol import EVAL_SEED, Purpose, step_generator, stream

    def draws(generator):
        return torch.rand(8, generator=generator)

    # Seed 2**31 - 1 passes the seed rule; its training batches were the adding task's fresh validation sets.
    task = AddingTask(length=20, batch_size=8, eval_size=8)
    task.setup(torch.device("cpu"), None)
    for step in (0, 1, 99):
        batch = task.train_batch(step, seed=2**31 - 1)
        fresh = task._eval_batches(stream(EVAL_SEED, Purpose.FRESH_VALIDATION, step))[0]
        assert not torch.equal(batch.inputs, fresh.inputs)
    # Seed 0 at step 1,000,008 was seed 1 at step 5.
    assert not torch.equal(draws(step_generator(0, 1_000_008)), draws(step_generator(1, 5)))
    # Seeds that agree in their low 32 bits (what torch's manual_seed keeps) and purposes of one key.
    assert not torch.equal(draws(step_generator(1, 0)), draws(step_generator(1, 2**32)))
    keys = [(seed, purpose, step) for seed in (0, 1, 2**31 - 1, 2**32 - 1) for purpose in Purpose for step in (0, 1, 5, 1_000_008)]
    assert len({tuple(draws(stream(*key)).tolist()) for key in keys}) == len(keys)


def test_streams_are_deterministic_and_fixed_validation_sets_are_shared_by_every_trial():
    from raylab.tasks.protocol import EVAL_SEED, Purpose, stream

    assert torch.equal(torch.rand(5, generator=stream(7, Purpose.TRAIN, 3)), torch.rand(5, generator=stream(7, Purpose.TRAIN, 3)))
    first, second = CopyTask(delay=10, eval_size=16), CopyTask(delay=10, eval_size=16)
    first.setup(torch.device("cpu"), None)
    second.setup(torch.device("cpu"), None)
    assert torch.equal(first._val_batches[0].targets, second._val_batches[0].targets)
    assert not torch.equal(first._val_batches[0].inputs, first._batch(*copy_sequences(stream(EVAL_SEED, Purpose.TRAIN, 0), 16, 10)).inputs)
