"""GRU (Cho et al. 2014) in PyTorch's formulation and initialisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from raylab.cells.functional import zeros_state


class GRU(nn.Module):
    """GRU with `torch.nn.GRU`'s gates (r, z, n), init U(+-1/sqrt(N)) and fused kernel.

    Neither paper specifies a GRU of its own; this is PyTorch's, with both bias vectors (the reset
    gate multiplies W_hn h + b_hn), so it has 3(N(N + n_in) + 2N) parameters.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        for param in self.parameters():
            nn.init.uniform_(param, -hidden_size**-0.5, hidden_size**-0.5)

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = zeros_state(inputs, self.hidden_size) if state is None else state
        params = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        outputs, h_n = torch._VF.gru(inputs, h.unsqueeze(0), params, True, 1, 0.0, self.training, False, True)
        return outputs, h_n.squeeze(0)

    def forward_reference(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = zeros_state(inputs, self.hidden_size) if state is None else state
        outputs = []
        for t in range(inputs.shape[1]):
            x_r, x_z, x_n = (inputs[:, t] @ self.weight_ih.t() + self.bias_ih).chunk(3, dim=1)
            h_r, h_z, h_n = (h @ self.weight_hh.t() + self.bias_hh).chunk(3, dim=1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
            outputs.append(h)
        return torch.stack(outputs, dim=1), h
