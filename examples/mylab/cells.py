"""A user cell: an IndRNN whose update is gated by the input.

Only `forward(inputs, state) -> (outputs, state)` is required of a cell; raylab passes `input_size`
and `hidden_size`, and every other constructor argument is an option of the sweep file, checked
against its type hint before anything runs (`gain: 0.9`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GatedIndRNN(nn.Module):
    """h_t = g_t * relu(W x_t + u * h_{t-1} + b) + (1 - g_t) * h_{t-1},  g_t = sigmoid(W_g x_t + b_g)."""

    def __init__(self, input_size: int, hidden_size: int, gain: float = 1.0, gate_bias: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < gain <= 1.0:
            raise ValueError(f"gain must be in (0, 1], got {gain}")  # raylab reports it as one line naming the key
        self.input_size, self.hidden_size = input_size, hidden_size
        self.input = nn.Linear(input_size, 2 * hidden_size)  # candidate and gate pre-activations, in one matmul
        self.recurrent = nn.Parameter(torch.empty(hidden_size).uniform_(0.0, gain))  # element-wise, as IndRNN
        with torch.no_grad():
            self.input.bias[hidden_size:].fill_(gate_bias)  # gates start mostly open

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch, steps, _ = inputs.shape
        candidate, gate = self.input(inputs).chunk(2, dim=-1)  # (B, T, H) each
        gate = torch.sigmoid(gate)
        hidden = inputs.new_zeros(batch, self.hidden_size) if state is None else state  # (B, H)
        outputs = []
        for t in range(steps):
            update = torch.relu(candidate[:, t] + self.recurrent * hidden)
            hidden = gate[:, t] * update + (1.0 - gate[:, t]) * hidden
            outputs.append(hidden)
        return torch.stack(outputs, dim=1), hidden  # (B, T, H), (B, H)
