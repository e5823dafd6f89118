"""LSTM with the nnRNN paper's initialisation (nnRNN reference §3.6)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from raylab.cells.functional import zeros_state


class LSTM(nn.Module):
    """LSTM as in the nnRNN code: xavier-normal gate weights, one bias per gate, no forget offset.

    The original code has four `Linear(N + n_in, N)` layers; here the same weights are stored in
    `torch.nn.LSTM`'s layout (gates i, f, g, o) and run in PyTorch's fused kernel. Each gate block is
    initialised xavier normal over the fan of the concatenated [h; x] input, std sqrt(2/(2N + n_in)),
    and its single bias U(+-1/sqrt(N + n_in)), so the parameter count is 4(N(N + n_in) + N).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.register_buffer("zero_bias_hh", torch.zeros(4 * hidden_size), persistent=False)
        std = (2.0 / (2 * hidden_size + input_size)) ** 0.5
        bound = (hidden_size + input_size) ** -0.5
        with torch.no_grad():
            self.weight_ih.normal_(0.0, std)
            self.weight_hh.normal_(0.0, std)
            self.bias.uniform_(-bound, bound)

    def forward(self, inputs: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = (zeros_state(inputs, self.hidden_size),) * 2 if state is None else state
        params = [self.weight_ih, self.weight_hh, self.bias, self.zero_bias_hh]
        outputs, h_n, c_n = torch._VF.lstm(
            inputs, (h.unsqueeze(0), c.unsqueeze(0)), params, True, 1, 0.0, self.training, False, True
        )
        return outputs, (h_n.squeeze(0), c_n.squeeze(0))

    def forward_reference(self, inputs: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = (zeros_state(inputs, self.hidden_size),) * 2 if state is None else state
        outputs = []
        for t in range(inputs.shape[1]):
            gates = inputs[:, t] @ self.weight_ih.t() + h @ self.weight_hh.t() + self.bias
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h, c)
