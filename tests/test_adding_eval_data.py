"""The adding problem's validation data: fresh at every evaluation (the IndRNN code) or one fixed set."""

from __future__ import annotations

import torch
from torch import nn

from raylab.tasks.adding import AddingTask


class MeanOfMarked(nn.Module):
    """A 'model' whose error depends only on the data: it answers 1, the baseline."""

    def forward(self, inputs, state=None):
        return torch.ones(inputs.shape[0], 1), None


def val_losses(task: AddingTask, steps: list[int]) -> list[float]:
    task.setup(torch.device("cpu"), None)
    losses = []
    for step in steps:
        task.train_batch(step, seed=0)
        losses.append(task.evaluate(MeanOfMarked(), "val")["loss"])
    return losses


def test_fresh_sequences_at_every_evaluation_by_default():
    task = AddingTask(length=20, eval_size=300)
    assert task.eval_data == "fresh"
    first, second, first_again = val_losses(task, [99, 199, 99])
    assert first != second  # a new set after each training stretch
    assert first == first_again  # drawn from the step alone: a restored trial sees the same sets
    assert val_losses(AddingTask(length=20, eval_size=300), [99]) == [first]  # the same for every trial


def test_fixed_sequences_on_request():
    losses = val_losses(AddingTask(length=20, eval_size=300, eval_data="fixed"), [99, 199])
    assert losses[0] == losses[1]


def test_the_readout_is_lasagnes_dense_layer_by_default():
    """Theano adding.py's readout is a Lasagne DenseLayer: Glorot-uniform weight, zero bias (reference §3.1);
    `readout_init: default` keeps nn.Linear's own initialisation."""
    torch.manual_seed(0)
    glorot = AddingTask(length=10).readout(128)
    bound = (6 / (128 + 1)) ** 0.5
    assert (glorot.bias == 0).all() and glorot.weight.abs().max() <= bound and glorot.weight.abs().max() > 0.9 * bound
    default = AddingTask(length=10, readout_init="default").readout(128)
    assert (default.bias != 0).all() and default.weight.abs().max() <= 128**-0.5  # kaiming-uniform a=sqrt(5): ±1/sqrt(N)
