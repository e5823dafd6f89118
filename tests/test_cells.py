"""Every cell: forward, backward and an optimizer step; the fast path against the plain loop; the
trainable end to end (no Ray); one-line errors for bad options."""

from __future__ import annotations

import pytest
import torch

from raylab.cells import CELLS
from raylab.spec.config import ConfigError, OptimizerSpec
from raylab.networks.model import build_cell, check_cell_spec
from raylab.networks.optim import build_optimizer
from raylab.training.loop import run_trial

# Every cell, and every option that changes the computation.
VARIANTS = [
    {"name": "rnn", "nonlinearity": "modrelu"},
    {"name": "rnn", "nonlinearity": "tanh", "recurrent_init": "kaiming"},
    {"name": "rnn", "nonlinearity": "relu", "recurrent_init": "cayley", "input_init": "kaiming"},
    {"name": "rnn_orth", "recurrent_init": "henaff"},
    {"name": "rnn_orth"},
    {"name": "exprnn"},
    {"name": "exprnn", "recurrent_init": "random_orth", "nonlinearity": "tanh"},
    {"name": "nnrnn"},
    {"name": "nnrnn", "t_mask": "paper", "recurrent_init": "cayley"},
    {"name": "eurnn"},
    {"name": "eurnn", "mode": "real", "capacity": 2},
    {"name": "eurnn", "style": "fft"},
    {"name": "eurnn", "style": "fft", "mode": "real"},
    {"name": "lstm"},
    {"name": "gru"},
    {"name": "indrnn"},
    {"name": "indrnn", "num_layers": 3, "batch_norm": "before", "timesteps": 6, "last_layer_init": True},
    {"name": "indrnn", "architecture": "residual", "batch_norm": "after", "num_layers": 2},
    {"name": "indrnn", "architecture": "residual", "batch_norm": "before", "batch_norm_stats": "frame", "num_layers": 2},
    {"name": "indrnn", "architecture": "dense", "batch_norm": "after", "growth_rate": 2, "dense_first": 2, "dense_blocks": [2, 1]},
]


pytestmark = pytest.mark.usefixtures("one_thread")


IDS = ["-".join(f"{v}" for k, v in spec.items()) for spec in VARIANTS]


def make(spec: dict, input_size: int = 3, hidden_size: int = 8, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_cell(check_cell_spec(spec), input_size, hidden_size).to(dtype)


def perturb(cell: torch.nn.Module) -> None:
    """Move parameters off their special initial values (T = 0, gamma = 1, b = 0) so every term is exercised."""
    with torch.no_grad():
        for name, param in cell.named_parameters():
            if name in ("t", "gamma", "modrelu_bias"):
                param.add_(0.1 * torch.randn_like(param))


def test_every_registered_cell_is_covered():
    assert {spec["name"] for spec in VARIANTS} == set(CELLS)


@pytest.mark.parametrize("spec", VARIANTS, ids=IDS)
def test_forward_backward_step(spec):
    cell = make(spec)
    inputs = torch.randn(4, 6, 3)
    outputs, state = cell(inputs)
    assert outputs.shape == (4, 6, 8)
    outputs2, _ = cell(inputs, state)  # a carried state is accepted
    loss = outputs.pow(2).mean() + outputs2.pow(2).mean()
    penalty = getattr(cell, "penalty", None)
    if penalty is not None:
        loss = loss + penalty()
    optimizer = build_optimizer(cell, OptimizerSpec(lr=0.01, lr_orth=0.001))
    before = [p.detach().clone() for p in cell.parameters()]
    loss.backward()
    optimizer.step()
    getattr(cell, "after_optimizer_step", lambda: None)()
    assert all(torch.isfinite(p).all() for p in cell.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, cell.parameters()))


@pytest.mark.parametrize("spec", VARIANTS, ids=IDS)
def test_fast_path_equals_plain_loop(spec):
    """Outputs and final state to 1e-5 in float32; every gradient to 1e-8 in float64."""
    cell = make(spec)
    perturb(cell)
    inputs, h0_source = torch.randn(4, 7, 3), torch.randn(4, 7, 3)
    _, state = cell.forward_reference(h0_source)  # a non-zero initial state
    fast, fast_state = cell(inputs, state)
    slow, slow_state = cell.forward_reference(inputs, state)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.utils._pytree.tree_leaves(fast_state), torch.utils._pytree.tree_leaves(slow_state)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    cell = make(spec, dtype=torch.float64)
    perturb(cell)
    inputs = inputs.double()
    grads = []
    for forward in (cell.forward, cell.forward_reference):
        cell.zero_grad()
        outputs, _ = forward(inputs)
        (outputs * torch.linspace(-1, 1, outputs.shape[-1], dtype=torch.float64)).sum().backward()
        grads.append([p.grad.clone() for p in cell.parameters()])
    for fast_grad, slow_grad in zip(*grads):
        torch.testing.assert_close(fast_grad, slow_grad, atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize("spec", [{"name": n} for n in CELLS], ids=list(CELLS))
def test_through_the_trainable(spec):
    """`run_trial` with a tiny copy task: build, a few optimizer steps, evaluation, no Ray."""
    trial = {
        "variant": spec["name"],
        "task": {"name": "copy", "delay": 4, "batch_size": 3, "eval_size": 6},
        "cell": check_cell_spec(spec),
        "optimizer": {"name": "rmsprop", "lr": 1e-3, "lr_orth": 1e-4, "clip_grad_norm": 1.0},
        "training": {"steps": 3, "eval_every": 3},
        "hidden_size": 8,
        "seed": 0,
    }
    reports = []
    run_trial(trial, lambda metrics, checkpoint: reports.append(metrics), device=torch.device("cpu"))
    assert reports and reports[-1]["step"] == 3 and "val/loss" in reports[-1]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "nnrnn", "t_mask": "diagonal"}, "one of code|paper"),
        ({"name": "rnn", "nonlinearity": "sigmoid"}, "one of tanh|relu|modrelu"),
        ({"name": "exprnn", "recurrent_init": "xavier"}, "one of henaff|cayley|random_orth"),
        ({"name": "indrnn", "architcture": "plain"}, "unknown option"),
    ],
)
def test_bad_option_is_one_line(spec, message):
    with pytest.raises(ConfigError) as error:
        check_cell_spec(spec, "variants[0].cell")
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "spec, hidden_size, message",
    [
        ({"name": "nnrnn"}, 7, "hidden_size must be even"),
        ({"name": "eurnn", "style": "fft"}, 12, "power of two"),
        ({"name": "indrnn", "last_layer_init": True}, 8, "needs timesteps"),
        ({"name": "indrnn", "batch_norm_stats": "frame"}, 8, "needs batch_norm before or after"),
    ],
)
def test_bad_construction_is_one_line(spec, hidden_size, message):
    with pytest.raises(ConfigError) as error:
        build_cell(check_cell_spec(spec), 3, hidden_size, "variants[0].cell")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("variants[0].cell: ")


def test_eurnn_complex_modrelu_has_finite_gradients_at_zero_input():
    # psMNIST starts with black pixels and EURNN's input has no bias: z = 0 exactly at step 1.
    cell = CELLS["eurnn"](input_size=1, hidden_size=8, mode="complex")
    outputs, _ = cell(torch.zeros(2, 5, 1))
    outputs.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in cell.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["rnn", "rnn_orth"])
def test_rnn_bias_follows_the_paper_era_code_by_default(name):
    """The paper-era code's one bias is V = nn.Linear(N, N)'s, U(±1/sqrt(N)); the later release moved it
    to U = nn.Linear(n_in, N), U(±1/sqrt(n_in)): ±1.0 on psMNIST, where n_in = 1 (nnRNN reference §3.2)."""
    torch.manual_seed(0)
    cell = CELLS[name](input_size=1, hidden_size=512)
    assert 0.04 < cell.bias_ih.abs().max() <= 512**-0.5  # ±0.044
    release = CELLS[name](input_size=1, hidden_size=512, input_bias_init="fan_in")
    assert release.bias_ih.abs().max() > 0.9  # ±1.0


def test_indrnn_he_normal_and_bn_eps_are_the_theano_ptb_nets():
    """Lasagne's HeNormal(gain=sqrt(2)/2): std sqrt(1 / (2 fan_in)), about 4x Kaiming-uniform a = 8's;
    the Theano BN layers use eps 1e-4 (IndRNN reference §1.5, §1.8)."""
    torch.manual_seed(0)
    cell = CELLS["indrnn"](input_size=200, hidden_size=400, num_layers=2, batch_norm="before", batch_norm_stats="frame",
                           input_init="he_normal", batch_norm_eps=1e-4)
    for linear in cell.linears:
        assert abs(linear.weight.std().item() / (0.5 / linear.in_features) ** 0.5 - 1) < 0.03 and (linear.bias == 0).all()
    pytorch = CELLS["indrnn"](input_size=200, hidden_size=400, num_layers=2)
    assert 3.8 < cell.linears[1].weight.std().item() / pytorch.linears[1].weight.std().item() < 4.3
    assert all(r.norm.eps == 1e-4 for r in cell.recurrences)
    assert all(r.norm.eps == 1e-5 for r in CELLS["indrnn"](input_size=2, hidden_size=8, batch_norm="after").recurrences)


def test_indrnn_input_init_normal_is_the_theano_adding_problem_law():
    torch.manual_seed(0)
    cell = CELLS["indrnn"](input_size=2, hidden_size=512, num_layers=2, input_init="normal")
    weights = torch.cat([linear.weight.flatten() for linear in cell.linears])
    assert abs(weights.std().item() - 0.001) < 5e-5 and all((linear.bias == 0).all() for linear in cell.linears)
    wide = CELLS["indrnn"](input_size=2, hidden_size=512, num_layers=2)  # kaiming_uniform, a = 8: the PyTorch code
    assert wide.linears[1].weight.std().item() > 0.005
