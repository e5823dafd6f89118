"""Vanilla RNN and RNN-orth, h_t = phi(U x_t + b + V h_{t-1}) (nnRNN reference §3.2)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from raylab.cells.functional import zeros_state
from raylab.cells.orthogonal import OrthInit, init_orthogonal_
from raylab.cells.recurrence import Nonlinearity, dense_recurrence, dense_recurrence_reference

InputInit = Literal["xavier", "kaiming"]
# The pre-activation's bias: hidden_size, U(±1/√N), the paper-era code behind the published numbers (no
# bias on U, V = nn.Linear(N, N) with its default bias); fan_in, U(±1/√n_in), the later release, which
# moved the bias to U = nn.Linear(n_in, N) (±1.0 on psMNIST, where n_in = 1). nnRNN reference §3.2.
InputBiasInit = Literal["hidden_size", "fan_in"]
RecurrentInit = Literal["xavier", "kaiming", "henaff", "cayley", "random_orth"]


def init_input_weight(weight: Tensor, scheme: InputInit) -> None:
    """`--iinit` of the original code: xavier normal or kaiming normal (fan_in, gain sqrt 2)."""
    if scheme == "xavier":
        nn.init.xavier_normal_(weight)
    else:
        nn.init.kaiming_normal_(weight)


def new_modrelu_bias(hidden_size: int) -> nn.Parameter:
    """modReLU's bias, U(-0.01, 0.01) as in the nnRNN and expRNN code (nnRNN §3.1)."""
    return nn.Parameter(torch.empty(hidden_size).uniform_(-0.01, 0.01))


class RNN(nn.Module):
    """Vanilla RNN (tanh | relu | modrelu), V initialised xavier | kaiming | henaff | cayley | random_orth.

    Unlike the original code, `relu` really is a ReLU (its `relu` silently meant no nonlinearity).
    `weight_hh` follows `torch.nn.RNN`'s convention (h_{t-1} W_hh^T): it is the transpose of the
    original code's row-form V. xavier and kaiming laws are unchanged by the transposition; the
    orthogonal inits store exactly V^T with V = expm(skew(A0)), the matrix the named initialiser gives
    (the post-release code ignored the name, nnRNN §10.2). Training is unconstrained in every case.
    tanh and relu run in PyTorch's fused RNN kernel, modrelu in a loop with a hand-written backward.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: Nonlinearity = "modrelu",
        recurrent_init: RecurrentInit = "xavier",
        input_init: InputInit = "xavier",
        input_bias_init: InputBiasInit = "hidden_size",
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.nonlinearity = input_size, hidden_size, nonlinearity
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))  # the pre-activation's one bias (paper-era code: V's; release: U's)
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.modrelu_bias = new_modrelu_bias(hidden_size) if nonlinearity == "modrelu" else None
        init_input_weight(self.weight_ih, input_init)
        bias_bound = (input_size if input_bias_init == "fan_in" else hidden_size) ** -0.5
        nn.init.uniform_(self.bias_ih, -bias_bound, bias_bound)
        if recurrent_init == "xavier":
            nn.init.xavier_normal_(self.weight_hh)
        elif recurrent_init == "kaiming":
            nn.init.kaiming_normal_(self.weight_hh)
        else:
            init_orthogonal_(self.weight_hh, recurrent_init)

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = zeros_state(inputs, self.hidden_size) if state is None else state
        return dense_recurrence(inputs, h, self.weight_ih, self.bias_ih, self.weight_hh, self.nonlinearity, self.modrelu_bias, self.training)

    def forward_reference(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = zeros_state(inputs, self.hidden_size) if state is None else state
        return dense_recurrence_reference(inputs, h, self.weight_ih, self.bias_ih, self.weight_hh, self.nonlinearity, self.modrelu_bias)


class RNNOrth(RNN):
    """RNN-orth: the vanilla RNN with an orthogonal V at initialisation, trained unconstrained.

    "RNN-orth" is not a net type in the original code but `RNN` with an orthogonal `--rinit`; the
    default, random_orth, is the supplement's choice for the copy task and psMNIST (Tables 2, 3).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: Nonlinearity = "modrelu",
        recurrent_init: OrthInit = "random_orth",
        input_init: InputInit = "xavier",
        input_bias_init: InputBiasInit = "hidden_size",
    ) -> None:
        super().__init__(input_size, hidden_size, nonlinearity, recurrent_init, input_init, input_bias_init)
