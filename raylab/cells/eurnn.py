"""EURNN (Jing et al. 2017), after jingli9111/EUNN-tensorflow (nnRNN reference §3.5)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from raylab.cells.recurrence import ModReluRecurrence

Style = Literal["tunable", "fft"]
Mode = Literal["complex", "real"]
EUNN_EPS = 0.01  # EUNN's modReLU adds 0.01 to the norm


def rotate_pairs(h: Tensor, cos: Tensor, sin: Tensor, phase: Tensor | None) -> Tensor:
    """Rotate pairs (a, b) laid out as h[..., k, 0, :], h[..., k, 1, :]: a' = c a - e^{i phi} s b, b' = s a + e^{i phi} c b."""
    a, b = h.select(-2, 0), h.select(-2, 1)
    if phase is not None:
        b = b * phase
    return torch.stack([cos * a - sin * b, sin * a + cos * b], dim=-2)


def tunable_layer(h: Tensor, index: int, cos: Tensor, sin: Tensor, phase: Tensor | None) -> Tensor:
    """Layer F_{index+1}: type A (even index) rotates (0,1), (2,3), ...; type B rotates (1,2), (3,4), ... and passes 0 and N-1 through."""
    n = h.shape[-1]
    if index % 2 == 0:
        pairs = h.reshape(*h.shape[:-1], n // 2, 2, 1)
        return rotate_pairs(pairs, cos[:, None], sin[:, None], None if phase is None else phase[:, None]).reshape(h.shape)
    middle = h[..., 1 : n - 1].reshape(*h.shape[:-1], n // 2 - 1, 2, 1)
    middle = rotate_pairs(middle, cos[:, None], sin[:, None], None if phase is None else phase[:, None])
    return torch.cat([h[..., :1], middle.reshape(*h.shape[:-1], n - 2), h[..., n - 1 :]], dim=-1)


def fft_layer(h: Tensor, index: int, cos: Tensor, sin: Tensor, phase: Tensor | None) -> Tensor:
    """Layer `index` of the FFT style: pairs (p, p + s) with stride s = N / 2^(index+1)."""
    n = h.shape[-1]
    stride = n >> (index + 1)
    pairs = h.reshape(*h.shape[:-1], n // (2 * stride), 2, stride)
    shape = (n // (2 * stride), stride)
    rotated = rotate_pairs(pairs, cos.view(shape), sin.view(shape), None if phase is None else phase.view(shape))
    return rotated.reshape(h.shape)


class EURNN(nn.Module):
    """EURNN: h_t = modReLU(x_t U + W h_{t-1}), W a product of 2x2 rotation layers (tunable or FFT style).

    - style "tunable": capacity L (even) layers alternating type A (N/2 rotations) and type B (N/2 - 1);
      style "fft": log2(N) layers with strides N/2, ..., 1 (N a power of two).
    - mode "complex": h in C^N, each rotation has a phase phi and W ends with D = diag(e^{i omega});
      the cell's output is Re(h) and its carried state is [Re h, Im h], (B, 2N). mode "real": no phi, no D.
    - All angles ~ U(-pi, pi); U ~ U(-0.01, 0.01) (real and imaginary parts), no input bias.
    - EUNN's modReLU: n = |z| + 0.01, relu(n + b) z / n (complex), sign(z) relu(|z| + 0.01 + b) (real); b = 0.

    Defaults are the EUNN-tensorflow task scripts' (complex, tunable, capacity 4); which settings the
    nnRNN authors used is unknown (§13). `forward` builds W as a dense matrix once per pass by
    applying the layers to the identity (no per-rotation loops), then runs the recurrence;
    `forward_reference` applies the rotation layers to h at every step, as the original does.
    """

    def __init__(self, input_size: int, hidden_size: int, style: Style = "tunable", capacity: int = 4, mode: Mode = "complex") -> None:
        super().__init__()
        n = hidden_size
        if style == "tunable" and (n % 2 or n < 4 or capacity < 2 or capacity % 2):
            raise ValueError(f"tunable style needs an even hidden_size >= 4 and an even capacity >= 2, got {n} and {capacity}")
        if style == "fft" and (n < 2 or n & (n - 1)):
            raise ValueError(f"fft style needs a hidden_size that is a power of two, got {n}")
        self.input_size, self.hidden_size, self.style, self.mode = input_size, n, style, mode
        self.is_complex = mode == "complex"
        if style == "tunable":
            sizes = [n // 2 if i % 2 == 0 else n // 2 - 1 for i in range(capacity)]
        else:
            sizes = [n // 2] * int(math.log2(n))
        width = 2 * n if self.is_complex else n
        self.weight_ih = nn.Parameter(torch.empty(width, input_size).uniform_(-0.01, 0.01))  # real rows, then imaginary rows
        self.theta = nn.ParameterList(nn.Parameter(torch.empty(size).uniform_(-math.pi, math.pi)) for size in sizes)
        if self.is_complex:
            self.phi = nn.ParameterList(nn.Parameter(torch.empty(size).uniform_(-math.pi, math.pi)) for size in sizes)
            self.omega = nn.Parameter(torch.empty(n).uniform_(-math.pi, math.pi))
        self.modrelu_bias = nn.Parameter(torch.zeros(n))

    def unitary(self, h: Tensor) -> Tensor:
        """W h for a batch of row vectors h (..., N), real or complex, one rotation layer at a time."""
        layer = tunable_layer if self.style == "tunable" else fft_layer
        for index, theta in enumerate(self.theta):
            phase = torch.polar(torch.ones_like(self.phi[index]), self.phi[index]) if self.is_complex else None
            h = layer(h, index, torch.cos(theta), torch.sin(theta), phase)
        if self.is_complex:
            h = h * torch.polar(torch.ones_like(self.omega), self.omega)
        return h

    def initial_state(self, inputs: Tensor, state: Tensor | None) -> Tensor:
        width = 2 * self.hidden_size if self.is_complex else self.hidden_size
        return inputs.new_zeros(inputs.shape[0], width) if state is None else state

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n = self.hidden_size
        h = self.initial_state(inputs, state)
        projected = nn.functional.linear(inputs.transpose(0, 1), self.weight_ih)  # (T, B, N or 2N), one product
        eye = torch.eye(n, dtype=inputs.dtype, device=inputs.device)
        if not self.is_complex:
            matrix = self.unitary(eye)  # (N, N), row form: W h = h @ matrix
            out = ModReluRecurrence.apply(projected, h, matrix, self.modrelu_bias + EUNN_EPS)
            return out.transpose(0, 1), out[-1]
        matrix = self.unitary(eye.to(torch.complex64 if inputs.dtype == torch.float32 else torch.complex128))
        real, imag = matrix.real, matrix.imag
        block = torch.cat([torch.cat([real, imag], 1), torch.cat([-imag, real], 1)])  # (2N, 2N): [hr, hi] @ block
        outputs = []
        for t in range(projected.shape[0]):
            h = complex_modrelu(torch.addmm(projected[t], h, block), self.modrelu_bias)
            outputs.append(h)
        states = torch.stack(outputs, dim=1)  # (B, T, 2N)
        return states[..., :n], h

    def forward_reference(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n = self.hidden_size
        h = self.initial_state(inputs, state)
        if self.is_complex:
            h = torch.complex(h[:, :n], h[:, n:])
        outputs = []
        for t in range(inputs.shape[1]):
            x = inputs[:, t] @ self.weight_ih.t()
            if self.is_complex:
                z = torch.complex(x[:, :n], x[:, n:]) + self.unitary(h)
                norm = safe_modulus(z.real, z.imag) + EUNN_EPS
                h = torch.relu(norm + self.modrelu_bias) * z / norm
                outputs.append(h.real)
            else:
                z = x + self.unitary(h)
                h = torch.sign(z) * torch.relu(z.abs() + EUNN_EPS + self.modrelu_bias)
                outputs.append(h)
        if self.is_complex:
            h = torch.cat([h.real, h.imag], dim=1)
        return torch.stack(outputs, dim=1), h


def complex_modrelu(z: Tensor, bias: Tensor) -> Tensor:
    """EUNN's complex modReLU on [Re z, Im z] (B, 2N): relu(|z| + 0.01 + b) z / (|z| + 0.01)."""
    n = bias.shape[0]
    norm = safe_modulus(z[:, :n], z[:, n:]) + EUNN_EPS
    scale = torch.relu(norm + bias) / norm
    return z * scale.repeat(1, 2)


def safe_modulus(real: Tensor, imag: Tensor) -> Tensor:
    """|z| with a zero gradient at z = 0 instead of sqrt's 0/0 = NaN.

    An exactly-zero pre-activation is common: MNIST's background pixels are 0 and U has no bias,
    so the first step of a psMNIST sequence would otherwise turn every gradient into NaN.
    """
    squared = real**2 + imag**2
    return torch.sqrt(squared.clamp_min(torch.finfo(squared.dtype).tiny))
