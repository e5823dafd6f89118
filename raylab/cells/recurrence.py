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
    """h_t = modrelu(p_t + h_{t-1} @ weight, bias) for all t; returns every h_t, (T, B, N).

    Only the outputs are kept for the backward pass: h_t != 0 exactly where modrelu's slope is 1
    (|z| + b > 0 and z != 0), and there sign(z) = sign(h_t). Large fresh buffers are few on purpose:
    first-touch page faults on (T, B, N) temporaries cost more than the arithmetic on them.
    """

    @staticmethod
    def forward(ctx, projected: Tensor, h0: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        out = torch.empty_like(projected)  # (T, B, N)
        h = h0
        for t in range(projected.shape[0]):
            z = torch.addmm(projected[t], h, weight, out=out[t])
            magnitude = torch.abs(z).add_(bias).relu_()
            h = z.sign_().mul_(magnitude)  # modrelu in place: out[t] = sign(z) relu(|z| + b)
        ctx.save_for_backward(out, h0, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out, h0, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        weight_t = weight.t()
        grad_pre = torch.empty_like(out)
        grad_bias = torch.zeros_like(out[0])  # (B, N), summed over the batch at the end
        for t in range(out.shape[0] - 1, -1, -1):
            if t == out.shape[0] - 1:
                grad_pre[t].copy_(grad_out[t])
            else:
                torch.addmm(grad_out[t], grad_pre[t + 1], weight_t, out=grad_pre[t])
            grad_pre[t].mul_(out[t] != 0)
            grad_bias.addcmul_(grad_pre[t], torch.sign(out[t]))
        n = out.shape[-1]
        # one product over all (T - 1) * B rows for the weight, plus the h0 row block
        grad_weight = torch.addmm(h0.t() @ grad_pre[0], out[:-1].reshape(-1, n).t(), grad_pre[1:].reshape(-1, n))
        return grad_pre, grad_pre[0] @ weight_t, grad_weight, grad_bias.sum(0)


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
        grad_pre = torch.empty_like(out)
        grad_u = torch.zeros_like(out[0])  # (B, N), summed over the batch at the end
        for t in range(out.shape[0] - 1, -1, -1):
            if t == out.shape[0] - 1:
                grad_pre[t].copy_(grad_out[t])
            else:
                torch.addcmul(grad_out[t], grad_pre[t + 1], u, out=grad_pre[t])
            grad_pre[t].mul_(out[t] > 0)  # relu' is 0 at 0, as in the authors' CUDA kernel
            grad_u.addcmul_(grad_pre[t], out[t - 1] if t > 0 else h0)
        return grad_pre, grad_pre[0] * u, grad_u.sum(0)


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
