"""nnRNN, the non-normal RNN of Kerg et al. 2019: W = P (Lambda + T) P^T (nnRNN reference §3.4)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from raylab.cells.functional import zeros_state
from raylab.cells.orthogonal import OrthInit, init_log_parameter_, orthogonal_from_upper, upper_mask
from raylab.cells.recurrence import Nonlinearity, dense_recurrence, dense_recurrence_reference
from raylab.cells.rnn import InputInit, init_input_weight, new_modrelu_bias
from raylab.cells.tags import tag

TMask = Literal["code", "paper"]


def block_indices(n: int) -> Tensor:
    """Flat indices into an (N, N) matrix of the 2x2 blocks' entries, ordered (2i,2i), (2i,2i+1), (2i+1,2i), (2i+1,2i+1)."""
    first = 2 * torch.arange(n // 2, device="cpu")
    return torch.cat([first * n + first, first * n + first + 1, (first + 1) * n + first, (first + 1) * n + first + 1])


def t_entries(n: int, kind: TMask) -> Tensor:
    """Where T's free entries live: the strict upper triangle ("code"), or that minus the blocks' (2i, 2i+1) ("paper")."""
    mask = upper_mask(n)
    if kind == "paper":
        first = 2 * torch.arange(n // 2, device="cpu")
        mask[first, first + 1] = False
    return mask


class NNRNN(nn.Module):
    """nnRNN: h_t = modrelu(U x_t + h_{t-1} P (Lambda + T) P^T); P orthogonal at lr_orth, T decayed.

    In the code's row form (the transpose of the paper's column form):
    - P = expm(skew(log_P)); the N(N-1)/2 free entries of log_P are tagged `lr="lr_orth"`.
    - Lambda is block-diagonal, block i = gamma_i [[cos theta_i, -sin theta_i], [sin theta_i, cos theta_i]]
      on rows/cols (2i, 2i+1); theta_i ~ U(0, 6.28), gamma_i = 1. Only the N/2 used thetas are stored.
    - T is strictly upper triangular, zero at init, with weight decay `t_decay` (the code's --Tdecay).
    - `penalty()` = delta * sum_i (gamma_i - 1)^2 (the code's --alam), added to the task loss.

    `t_mask` picks T's pattern. "code" (default) is the original code's full strict upper triangle,
    which overlaps the (2i, 2i+1) entry of every rotation block, so eigenvalue moduli drift from gamma
    once T != 0 (§3.4); it reproduces the published numbers and the §9 parameter counts. "paper"
    leaves those N/2 entries out (a block-strictly triangular T, N/2 fewer parameters), so the moduli
    stay gamma_i for any T, as the paper describes. The recurrent matrix is built once per forward
    pass with one scatter and two matrix products, never per step or per block.
    `recurrent_init` sets only the Schur basis P; defaults are the supplement's copy-task values
    (Table 2: henaff, delta 1e-4, T decay 1e-6).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        recurrent_init: OrthInit = "henaff",
        input_init: InputInit = "xavier",
        nonlinearity: Nonlinearity = "modrelu",
        delta: float = 1e-4,
        t_decay: float = 1e-6,
        t_mask: TMask = "code",
    ) -> None:
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (2x2 rotation blocks), got {hidden_size}")
        if delta < 0 or t_decay < 0:
            raise ValueError(f"delta and t_decay must be non-negative, got {delta} and {t_decay}")
        n = hidden_size
        self.input_size, self.hidden_size, self.nonlinearity, self.delta = input_size, n, nonlinearity, delta
        self.register_buffer("upper", upper_mask(n), persistent=False)
        t_pattern = t_entries(n, t_mask)
        # One scatter builds Lambda + T: T's entries then the blocks' (code mask: T adds into (2i, 2i+1)).
        flat = torch.arange(n * n, device="cpu").view(n, n)
        self.register_buffer("theta_index", torch.cat([flat[t_pattern], block_indices(n)]), persistent=False)
        self.weight_ih = nn.Parameter(torch.empty(n, input_size))  # U, no bias
        self.log_p = tag(nn.Parameter(torch.empty(n * (n - 1) // 2)), lr="lr_orth", weight_decay=0.0)
        self.t = tag(nn.Parameter(torch.zeros(int(t_pattern.sum()))), weight_decay=t_decay)
        self.theta = nn.Parameter(torch.empty(n // 2).uniform_(0.0, 2 * 3.14))  # the code's 2 * 3.14, not 2 pi
        self.gamma = nn.Parameter(torch.ones(n // 2))
        self.modrelu_bias = new_modrelu_bias(n) if nonlinearity == "modrelu" else None
        init_input_weight(self.weight_ih, input_init)
        init_log_parameter_(self.log_p, self.upper, recurrent_init)

    def schur_basis(self) -> Tensor:
        """P = expm(skew(log_P)), orthogonal."""
        return orthogonal_from_upper(self.log_p, self.upper)

    def schur_form(self) -> Tensor:
        """Lambda + T (row form), (N, N)."""
        n = self.hidden_size
        cos, sin = self.gamma * torch.cos(self.theta), self.gamma * torch.sin(self.theta)
        values = torch.cat([self.t, cos, -sin, sin, cos])
        return values.new_zeros(n * n).index_add(0, self.theta_index, values).view(n, n)

    def recurrent_matrix(self) -> Tensor:
        """R = P (Lambda + T) P^T, the row-form matrix: the update is h_{t-1} R."""
        p = self.schur_basis()
        return p @ self.schur_form() @ p.t()

    def penalty(self) -> Tensor:
        """delta * sum_i (gamma_i - 1)^2, keeping the eigenvalue moduli near 1."""
        return self.delta * (self.gamma - 1).pow(2).sum()

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = zeros_state(inputs, self.hidden_size) if state is None else state
        weight_hh = self.recurrent_matrix().t()  # once per forward pass
        return dense_recurrence(inputs, h, self.weight_ih, None, weight_hh, self.nonlinearity, self.modrelu_bias, self.training)

    def forward_reference(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = zeros_state(inputs, self.hidden_size) if state is None else state
        return dense_recurrence_reference(inputs, h, self.weight_ih, None, self.recurrent_matrix().t(), self.nonlinearity, self.modrelu_bias)
