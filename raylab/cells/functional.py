"""Small pure functions shared by several cells."""

from __future__ import annotations

import torch
from torch import Tensor


def modrelu(z: Tensor, bias: Tensor) -> Tensor:
    """Real modReLU, sign(z) * relu(|z| + b) (nnRNN §3.1); identity when b = 0 and z != 0."""
    return torch.sign(z) * torch.relu(z.abs() + bias)


def zeros_state(inputs: Tensor, hidden_size: int) -> Tensor:
    """h_0 = 0, shaped (B, H), on the inputs' device and dtype."""
    return inputs.new_zeros(inputs.shape[0], hidden_size)
