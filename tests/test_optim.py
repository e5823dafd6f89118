"""Optimizer groups come from parameter tags (lr_orth, T decay, IndRNN's undecayed u and biases)."""

from __future__ import annotations

import torch

from raylab.cells import NNRNN, ExpRNN, IndRNN
from raylab.spec.config import OptimizerSpec
from raylab.networks.optim import build_optimizer, parameter_groups


def group_of(groups: list[dict], param: torch.nn.Parameter) -> dict:
    return next(g for g in groups if any(p is param for p in g["params"]))


def test_nnrnn_groups():
    cell = NNRNN(3, 8, t_decay=1e-4)
    groups = parameter_groups(cell, OptimizerSpec(lr=1e-3, lr_orth=1e-4, weight_decay=0.0))
    assert group_of(groups, cell.log_p) == {"params": [cell.log_p], "lr": 1e-4, "weight_decay": 0.0}
    assert group_of(groups, cell.t)["weight_decay"] == 1e-4 and group_of(groups, cell.t)["lr"] == 1e-3
    for param in (cell.theta, cell.gamma, cell.weight_ih, cell.modrelu_bias):
        assert group_of(groups, param)["lr"] == 1e-3 and group_of(groups, param)["weight_decay"] == 0.0


def test_lr_orth_falls_back_to_lr():
    cell = ExpRNN(3, 8)
    groups = parameter_groups(cell, OptimizerSpec(lr=1e-3))
    assert group_of(groups, cell.log_weight)["lr"] == 1e-3


def test_indrnn_recurrent_weights_and_biases_never_decay():
    cell = IndRNN(3, 8, num_layers=2, batch_norm="after")
    groups = parameter_groups(cell, OptimizerSpec(name="adam", lr=2e-4, weight_decay=1e-4))
    for recurrence in cell.recurrences:
        assert group_of(groups, recurrence.weight_hh)["weight_decay"] == 0.0
    for linear in cell.linears:
        assert group_of(groups, linear.weight)["weight_decay"] == 1e-4
        assert group_of(groups, linear.bias)["weight_decay"] == 0.0


def test_rmsprop_alpha_and_adam_betas_reach_every_group():
    cell = NNRNN(3, 8)
    rmsprop = build_optimizer(cell, OptimizerSpec(name="rmsprop", alpha=0.9, lr_orth=1e-4))
    assert isinstance(rmsprop, torch.optim.RMSprop) and {g["alpha"] for g in rmsprop.param_groups} == {0.9}
    adam = build_optimizer(cell, OptimizerSpec(name="adam", betas=(0.0, 0.9), lr_orth=1e-4))
    assert {g["betas"] for g in adam.param_groups} == {(0.0, 0.9)} and len(adam.param_groups) == 3
