"""expRNN (Lezcano-Casado & Martinez-Rubio 2019) as run in the nnRNN experiments (nnRNN §3.3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from raylab.cells.functional import zeros_state
from raylab.cells.orthogonal import OrthInit, init_log_parameter_, orthogonal_from_upper, upper_mask
from raylab.cells.recurrence import Nonlinearity, dense_recurrence, dense_recurrence_reference
from raylab.cells.rnn import InputInit, init_input_weight, new_modrelu_bias
from raylab.cells.tags import tag


class ExpRNN(nn.Module):
    """expRNN: h_t = modrelu(W_in x_t + h_{t-1} B), B = expm(skew(A)) orthogonal, A at lr_orth.

    Free parameters only: W_in (no bias), the N(N-1)/2 strictly-upper entries of A (`log_weight`,
    tagged `lr="lr_orth"` and no weight decay) and modReLU's bias. B is recomputed with
    `torch.linalg.matrix_exp` once per forward pass inside autograd; its backward (spectral, see
    `orthogonal.SkewExp`) is the exact gradient of the original code's Frechet-derivative "orthogonal
    step" (§5.2), and B stays orthogonal to float32 precision whatever the optimizer does. Default init: henaff, the supplement's copy-task choice
    (cayley for psMNIST and PTB is one option away).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        recurrent_init: OrthInit = "henaff",
        input_init: InputInit = "xavier",
        nonlinearity: Nonlinearity = "modrelu",
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.nonlinearity = input_size, hidden_size, nonlinearity
        self.register_buffer("upper", upper_mask(hidden_size), persistent=False)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.log_weight = tag(nn.Parameter(torch.empty(hidden_size * (hidden_size - 1) // 2)), lr="lr_orth", weight_decay=0.0)
        self.modrelu_bias = new_modrelu_bias(hidden_size) if nonlinearity == "modrelu" else None
        init_input_weight(self.weight_ih, input_init)
        init_log_parameter_(self.log_weight, self.upper, recurrent_init)

    def orthogonal(self) -> Tensor:
        """B = expm(skew(A)), the row-form recurrent matrix: the update is h_{t-1} B."""
        return orthogonal_from_upper(self.log_weight, self.upper)

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = zeros_state(inputs, self.hidden_size) if state is None else state
        weight_hh = self.orthogonal().t()  # once per forward pass, never per step
        return dense_recurrence(inputs, h, self.weight_ih, None, weight_hh, self.nonlinearity, self.modrelu_bias, self.training)

    def forward_reference(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = zeros_state(inputs, self.hidden_size) if state is None else state
        return dense_recurrence_reference(inputs, h, self.weight_ih, None, self.orthogonal().t(), self.nonlinearity, self.modrelu_bias)
