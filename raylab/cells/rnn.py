"""Vanilla RNN, h_t = phi(U x_t + b + V h_{t-1}) (nnRNN reference §3.2)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from raylab.cells.functional import modrelu, zeros_state

Nonlinearity = Literal["tanh", "relu", "modrelu"]
InputInit = Literal["xavier", "kaiming"]
RecurrentInit = Literal["xavier", "kaiming"]


def init_input_weight(weight: Tensor, scheme: InputInit) -> None:
    """`--iinit` of the original code: xavier normal or kaiming normal (fan_in, gain sqrt 2)."""
    if scheme == "xavier":
        nn.init.xavier_normal_(weight)
    else:
        nn.init.kaiming_normal_(weight)


class RNN(nn.Module):
    """Vanilla RNN with tanh, relu or modReLU; tanh and relu run in PyTorch's fused RNN kernel.

    Unlike the original code, `relu` really is a ReLU (its `relu` silently meant no nonlinearity).
    `weight_hh` follows `torch.nn.RNN`'s convention (h_{t-1} W_hh^T): it is the transpose of the
    original code's row-form V, which leaves xavier and orthogonal initialisations unchanged in law.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: Nonlinearity = "modrelu",
        recurrent_init: RecurrentInit = "xavier",
        input_init: InputInit = "xavier",
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.nonlinearity = input_size, hidden_size, nonlinearity
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))  # U's bias; V has none (commit 036056b)
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        # The fused kernel wants a recurrent bias too; a zero buffer keeps the parameter count honest.
        self.register_buffer("zero_bias_hh", torch.zeros(hidden_size), persistent=False)
        if nonlinearity == "modrelu":
            self.modrelu_bias = nn.Parameter(torch.empty(hidden_size).uniform_(-0.01, 0.01))
        init_input_weight(self.weight_ih, input_init)
        nn.init.uniform_(self.bias_ih, -hidden_size**-0.5, hidden_size**-0.5)  # nn.Linear's default
        if recurrent_init == "xavier":
            nn.init.xavier_normal_(self.weight_hh)
        else:
            nn.init.kaiming_normal_(self.weight_hh)

    def recurrent_weight(self) -> Tensor:
        """W_hh, so that the pre-activation is U x_t + b + h_{t-1} W_hh^T."""
        return self.weight_hh

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = zeros_state(inputs, self.hidden_size) if state is None else state
        weight_hh = self.recurrent_weight()
        if self.nonlinearity in ("tanh", "relu"):
            kernel = torch._VF.rnn_tanh if self.nonlinearity == "tanh" else torch._VF.rnn_relu
            params = [self.weight_ih, weight_hh, self.bias_ih, self.zero_bias_hh]
            outputs, h_n = kernel(inputs, h.unsqueeze(0), params, True, 1, 0.0, self.training, False, True)
            return outputs, h_n.squeeze(0)
        projected = torch.nn.functional.linear(inputs, self.weight_ih, self.bias_ih)  # (B, T, H) in one product
        weight_hh_t = weight_hh.t()
        outputs = []
        for t in range(inputs.shape[1]):
            h = modrelu(torch.addmm(projected[:, t], h, weight_hh_t), self.modrelu_bias)
            outputs.append(h)
        return torch.stack(outputs, dim=1), h

    def forward_reference(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = zeros_state(inputs, self.hidden_size) if state is None else state
        weight_hh = self.recurrent_weight()
        activation = {"tanh": torch.tanh, "relu": torch.relu}.get(self.nonlinearity)
        outputs = []
        for t in range(inputs.shape[1]):
            pre = inputs[:, t] @ self.weight_ih.t() + self.bias_ih + h @ weight_hh.t()
            h = activation(pre) if activation else modrelu(pre, self.modrelu_bias)
            outputs.append(h)
        return torch.stack(outputs, dim=1), h
