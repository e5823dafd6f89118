"""The hot path: recurrences over a whole sequence, with hand-written backward passes.

PyTorch's fused RNN kernels cover tanh and relu. modReLU and IndRNN's element-wise recurrence have no
fused kernel, and a plain autograd loop records several graph nodes per time step. The two autograd
Functions below run the forward loop without a graph (one `addmm` or `addcmul` per step, written into
preallocated buffers) and do BPTT by hand, two ops per step; the weight gradients are then one
matrix product over all (time, batch) rows. `torch.jit.script` is deprecated and `torch.compile`
unrolls loops of hundreds of steps, so neither is used.

Tensors here are time-major, (T, B, N), so that every step reads and writes contiguous memory.
Both Functions are checked against plain autograd loops by `torch.autograd.gradcheck` in the tests.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from raylab.cells.functional import modrelu

Nonlinearity = Literal["tanh", "relu", "modrelu"]


class ModReluRecurrence(torch.autograd.Function):
    """h_t = modrelu(p_t + h_{t-1} @ weight, bias) for all t; returns every h_t, (T, B, N)."""

    @staticmethod
    def forward(ctx, projected: Tensor, h0: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        pre = torch.empty_like(projected)  # (T, B, N) pre-activations, kept for the backward pass
        out = torch.empty_like(projected)
        h = h0
        for t in range(projected.shape[0]):
            z = torch.addmm(projected[t], h, weight, out=pre[t])
            magnitude = torch.abs(z).add_(bias).relu_()
            h = torch.mul(magnitude, torch.sign(z), out=out[t])
        ctx.save_for_backward(pre, out, h0, weight, bias)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        pre, out, h0, weight, bias = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        sign = torch.sign(pre)
        # d modrelu / dz = 1 where |z| + b > 0 and z != 0 (sign(0) = 0 kills the rest), all steps at once
        slope = sign.abs().mul_((pre.abs() + bias) > 0)
        grad_pre = torch.empty_like(pre)
        weight_t = weight.t()
        steps = pre.shape[0]
        torch.mul(grad_out[-1], slope[-1], out=grad_pre[-1])
        for t in range(steps - 2, -1, -1):
            torch.addmm(grad_out[t], grad_pre[t + 1], weight_t, out=grad_pre[t])
            grad_pre[t].mul_(slope[t])
        previous = torch.cat([h0.unsqueeze(0), out[:-1]])  # (T, B, N): h_{t-1}
        n = pre.shape[-1]
        grad_weight = previous.reshape(-1, n).t() @ grad_pre.reshape(-1, n)  # one product over T * B rows
        grad_bias = (grad_pre * sign).sum((0, 1))
        return grad_pre, grad_pre[0] @ weight_t, grad_weight, grad_bias


class IndRecurrence(torch.autograd.Function):
    """h_t = relu(z_t + u * h_{t-1}) for all t (IndRNN's "only-recurrent" part); returns (T, B, N)."""

    @staticmethod
    def forward(ctx, projected: Tensor, h0: Tensor, u: Tensor) -> Tensor:
        out = torch.empty_like(projected)
        h = h0
        for t in range(projected.shape[0]):
            h = torch.addcmul(projected[t], h, u, out=out[t]).relu_()
        ctx.save_for_backward(out, h0, u)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out, h0, u = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        active = out > 0  # relu' is 0 at 0, as in the authors' CUDA kernel
        grad_pre = torch.empty_like(out)
        torch.mul(grad_out[-1], active[-1], out=grad_pre[-1])
        for t in range(out.shape[0] - 2, -1, -1):
            torch.addcmul(grad_out[t], grad_pre[t + 1], u, out=grad_pre[t]).mul_(active[t])
        previous = torch.cat([h0.unsqueeze(0), out[:-1]])
        return grad_pre, grad_pre[0] * u, (grad_pre * previous).sum((0, 1))


def dense_recurrence(
    inputs: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    bias_ih: Tensor | None,
    weight_hh: Tensor,
    nonlinearity: Nonlinearity,
    modrelu_bias: Tensor | None = None,
    training: bool = True,
) -> tuple[Tensor, Tensor]:
    """h_t = phi(x_t W_ih^T + b_ih + h_{t-1} W_hh^T) over a batch-first sequence, the fast way.

    `weight_hh` follows `torch.nn.RNN` (column form); cells with a computed matrix pass it here once
    per forward pass. tanh and relu run in PyTorch's fused RNN kernel; modrelu in `ModReluRecurrence`
    after one input projection for the whole sequence. Returns ((B, T, N) outputs, (B, N) last state).
    """
    if nonlinearity in ("tanh", "relu"):
        kernel = torch._VF.rnn_tanh if nonlinearity == "tanh" else torch._VF.rnn_relu
        params = [weight_ih, weight_hh] if bias_ih is None else [weight_ih, weight_hh, bias_ih, torch.zeros_like(bias_ih)]
        outputs, h_n = kernel(inputs, h0.unsqueeze(0), params, bias_ih is not None, 1, 0.0, training, False, True)
        return outputs, h_n.squeeze(0)
    projected = F.linear(inputs.transpose(0, 1), weight_ih, bias_ih)  # (T, B, N), one product
    out = ModReluRecurrence.apply(projected, h0, weight_hh.t(), modrelu_bias)
    return out.transpose(0, 1), out[-1]


def dense_recurrence_reference(
    inputs: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    bias_ih: Tensor | None,
    weight_hh: Tensor,
    nonlinearity: Nonlinearity,
    modrelu_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """`dense_recurrence` one Python step at a time, as in the original code."""
    h = h0
    outputs = []
    for t in range(inputs.shape[1]):
        pre = inputs[:, t] @ weight_ih.t() + h @ weight_hh.t()
        if bias_ih is not None:
            pre = pre + bias_ih
        h = modrelu(pre, modrelu_bias) if nonlinearity == "modrelu" else getattr(torch, nonlinearity)(pre)
        outputs.append(h)
    return torch.stack(outputs, dim=1), h


def ind_recurrence_reference(projected: Tensor, h0: Tensor, u: Tensor) -> Tensor:
    """`IndRecurrence` one Python step at a time, in plain autograd; (T, B, N) in and out."""
    h = h0
    outputs = []
    for t in range(projected.shape[0]):
        h = torch.relu(projected[t] + u * h)
        outputs.append(h)
    return torch.stack(outputs)
