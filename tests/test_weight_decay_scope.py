"""Which parameters get the sweep's weight decay: `optimizer.weight_decay_scope`, per the IndRNN code."""

from __future__ import annotations

import pytest
import torch

from raylab.spec.config import ConfigError, OptimizerSpec
from raylab.networks.model import build_model
from raylab.networks.optim import parameter_groups, parameter_roles
from raylab.tasks.mnist import MNISTTask
from raylab.tasks.ptb import PTBTask
from raylab.spec.typecheck import from_mapping


def decay_of(model: torch.nn.Module, spec: OptimizerSpec) -> dict[int, float]:
    return {id(p): group["weight_decay"] for group in parameter_groups(model, spec) for p in group["params"]}


def mnist_indrnn() -> torch.nn.Module:
    # the pixel-MNIST net: 2 plain layers, sequence-wise BN after each recurrence, a Linear readout
    return build_model(MNISTTask(subset=16), {"name": "indrnn", "num_layers": 2, "batch_norm": "after", "timesteps": 784}, 8)


@pytest.mark.parametrize(
    "scope, decayed",
    [
        ("no_bias", {"linear weights", "bn gamma", "readout weight"}),  # IndRNN MNIST (PyTorch) and PTB (Theano)
        ("no_bias_no_norm", {"linear weights", "readout weight"}),  # IndRNN PyTorch PTB without --bn_decay
        ("all", {"linear weights", "bn gamma", "readout weight", "linear biases", "bn beta", "readout bias"}),
    ],
)
def test_scope_decides_for_every_untagged_parameter(scope, decayed):
    model = mnist_indrnn()
    cell = model.cell
    kinds = {
        "linear weights": [linear.weight for linear in cell.linears],
        "linear biases": [linear.bias for linear in cell.linears],
        "bn gamma": [rec.norm.weight for rec in cell.recurrences],
        "bn beta": [rec.norm.bias for rec in cell.recurrences],
        "readout weight": [model.readout.weight],
        "readout bias": [model.readout.bias],
    }
    decay = decay_of(model, OptimizerSpec(name="adam", weight_decay=1e-4, weight_decay_scope=scope))
    for kind, params in kinds.items():
        assert {decay[id(p)] for p in params} == ({1e-4} if kind in decayed else {0.0}), kind
    assert {decay[id(rec.weight_hh)] for rec in cell.recurrences} == {0.0}  # u never decays (its own tag)
    assert len(decay) == sum(1 for _ in model.parameters())  # every parameter in exactly one group


def test_default_scope_is_the_indrnn_codes():
    assert OptimizerSpec().weight_decay_scope == "no_bias"


def test_frame_wise_bn_gamma_is_a_norm_and_the_tied_embedding_a_weight():
    task = PTBTask(level="word", embedding_size=8, tie_weights=True, subset=1000, batch_size=4)
    cell = {"name": "indrnn", "num_layers": 1, "batch_norm": "before", "batch_norm_stats": "frame", "frame_window": 5}
    model = build_model(task, cell, 8)
    roles = {id(p): role for p, role in parameter_roles(model)}
    assert roles[id(model.cell.recurrences[0].norm.weight)] == "norm"
    assert roles[id(model.cell.recurrences[0].norm.bias)] == "bias"
    assert roles[id(model.encoder.weight)] == "weight" and model.readout.weight is model.encoder.weight
    decay = decay_of(model, OptimizerSpec(weight_decay=2e-4, weight_decay_scope="no_bias_no_norm"))
    assert decay[id(model.encoder.weight)] == 2e-4 and decay[id(model.cell.recurrences[0].norm.weight)] == 0.0
    assert len(decay) == sum(1 for _ in model.parameters())  # the tied weight is in one group only


def test_rnn_biases_are_biases():
    from raylab.cells import RNN

    cell = RNN(3, 4, nonlinearity="modrelu")
    roles = {id(p): role for p, role in parameter_roles(cell)}
    assert roles[id(cell.bias_ih)] == roles[id(cell.modrelu_bias)] == "bias"
    assert roles[id(cell.weight_ih)] == roles[id(cell.weight_hh)] == "weight"


def test_unknown_scope_is_a_one_line_error():
    with pytest.raises(ConfigError, match="weight_decay_scope: 'biases' is not one of no_bias"):
        from_mapping(OptimizerSpec, {"weight_decay_scope": "biases"}, "optimizer")
