"""IndRNN (Li et al., CVPR 2018; "Deep IndRNN", 2019): stacks of h = relu(W x + b + u * h) (IndRNN reference §1)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from raylab.cells.recurrence import IndRecurrence, ind_recurrence_reference
from raylab.cells.tags import tag

Architecture = Literal["plain", "residual", "dense"]
BatchNorm = Literal["none", "before", "after"]
BatchNormStats = Literal["sequence", "frame"]
# kaiming_uniform: the authors' PyTorch code (a = 8); normal: N(0, input_init_std), the Theano adding problem;
# he_normal: Lasagne's HeNormal(gain=sqrt(2)/2), std sqrt(1 / (2 fan_in)), the Theano BN-before nets (PTB).
InputInit = Literal["kaiming_uniform", "normal", "he_normal"]
HE_NORMAL_GAIN = 2**-0.5  # the Theano scripts' `HeNormal(np.sqrt(2)/2)`: about 4x the std of Kaiming-uniform a = 8


class FrameNorm(nn.Module):
    """Frame-wise BN (§1.5 item 2): statistics per time step over the batch, gamma/beta shared over time.

    Running mean and (unbiased) variance are kept per absolute stream position, 4 * window + 1 rows
    for a nominal window T, as the author's `MyBatchNorm_stepCompute`; a window starting at `start`
    uses rows [s, s + T) with s = min(start, 2 * window), so windows up to 2 * window + 1 long fit.
    eps 1e-5, momentum 0.1, gamma 1, beta 0, as there.
    """

    is_normalization = True  # its gamma is a normalisation scale for the weight-decay scope (raylab.networks.optim)

    def __init__(self, width: int, window: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.window, self.eps, self.momentum = window, eps, momentum
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("running_mean", torch.zeros(4 * window + 1, width))
        self.register_buffer("running_var", torch.ones(4 * window + 1, width))

    def rows(self, start: int, steps: int) -> slice:
        first = min(start, 2 * self.window)
        if steps > 2 * self.window + 1:  # what fits at the capped start, whatever the start
            raise ValueError(f"frame-wise BN holds statistics for windows of up to {2 * self.window + 1} steps (frame_window={self.window}), got {steps}")
        return slice(first, first + steps)

    def forward(self, x: Tensor, start: int) -> Tensor:
        """(T, B, N) -> (T, B, N); `start` is the position of x[0] since the last state reset."""
        rows = self.rows(start, x.shape[0])
        if self.training:
            var, mean = torch.var_mean(x, dim=1, unbiased=False)  # (T, N) each: over the batch only
            with torch.no_grad():
                batch = x.shape[1]
                self.running_mean[rows].lerp_(mean, self.momentum)
                self.running_var[rows].lerp_(var * batch / max(batch - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean[rows], self.running_var[rows]
        return (x - mean[:, None]) * torch.rsqrt(var[:, None] + self.eps) * self.weight + self.bias


class Recurrence(nn.Module):
    """IndRNN's "only-recurrent" part, relu(z_t + u * h_{t-1}), with optional BN before or after.

    Sequence-wise BN normalises each channel over batch and time (`BatchNorm1d`, eps `batch_norm_eps`, momentum
    0.1), the flavour the authors use for classification; frame-wise BN (`FrameNorm`) over the batch
    at each time step, their language-model flavour (§1.5). u gets no weight decay.
    """

    def __init__(self, width: int, batch_norm: BatchNorm, stats: BatchNormStats = "sequence", frame_window: int = 50, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight_hh = tag(nn.Parameter(torch.empty(width)), weight_decay=0.0)
        self.batch_norm = batch_norm
        self.norm: nn.Module | None = None
        if batch_norm != "none":
            self.norm = FrameNorm(width, frame_window, eps=eps) if stats == "frame" else nn.BatchNorm1d(width, eps=eps)

    def normalise(self, x: Tensor, start: int) -> Tensor:
        if isinstance(self.norm, FrameNorm):
            return self.norm(x, start)
        return self.norm(x.reshape(-1, x.shape[-1])).view(x.shape)  # (T * B, N): statistics over batch and time

    def forward(self, z: Tensor, h0: Tensor | None, reference: bool = False, start: int = 0) -> tuple[Tensor, Tensor]:
        """(T, B, N) -> the layer's output (T, B, N) and its last hidden state h_T (B, N); `start`
        (frame-wise BN only) is the stream position of z[0].

        The state carried to the next window is the recurrence's own h_T, before a BN after it: BN is
        a layer on the output, as in the authors' code, and h_{t-1} in relu(z_t + u * h_{t-1}) is never
        normalised. (Carrying the normalised output was a bug: the next window started from another
        state than the one the recurrence had reached.)"""
        h0 = z.new_zeros(z.shape[1:]) if h0 is None else h0
        if self.batch_norm == "before":
            z = self.normalise(z, start)
        hidden = ind_recurrence_reference(z, h0, self.weight_hh) if reference else IndRecurrence.apply(z.contiguous(), h0, self.weight_hh)
        out = self.normalise(hidden, start) if self.batch_norm == "after" else hidden
        return out, hidden[-1]


def time_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout with one mask for all time steps (inverted scaling); x is (T, B, N)."""
    if not training or p == 0:
        return x
    mask = x.new_empty(1, *x.shape[1:]).bernoulli_(1 - p) / (1 - p)
    return x * mask


class IndRNN(nn.Module):
    """IndRNN: layers h_t = relu(W x_t + b + u * h_{t-1}), u a vector, |u| <= MAG^(1/T) after every step.

    Architectures ([DEEP] §1.7), each layer being Linear -> [BN] -> recurrence + ReLU -> [BN] -> dropout:
    - "plain": `num_layers` layers of width `hidden_size`;
    - "residual": pre-activation blocks x + F(x), F = BN-Rec -> drop -> Linear -> BN-Rec -> drop -> Linear,
      after a stem Linear; `num_layers` blocks plus one head BN-Rec, so 2 * num_layers + 1 recurrences;
    - "dense": DenseNet-style with growth rate k = `growth_rate`, a stem of `dense_first` * k units,
      blocks of `dense_blocks` layers (Lin 4k -> BN-Rec -> drop -> Lin k -> BN-Rec -> drop, concatenated),
      halving transitions between blocks and a last transition to `hidden_size` (the authors'
      `add_last_layer`, which halves: hidden_size 84 reproduces their sMNIST net, 256,514 parameters).
    `batch_norm` none | before | after places BN around every recurrence; `dropout` uses one mask over
    time on every layer output.

    `batch_norm_stats` picks the BN flavour (§1.5), default "sequence":
    - "sequence": statistics per channel over batch and all time steps (classification: MNIST, NTU);
    - "frame": statistics per time step over the batch only, gamma/beta shared over time, running
      statistics per absolute position since the last state reset (language modelling, §3.3-3.4),
      as the author's PyTorch `MyBatchNorm_stepCompute`: 4 * `frame_window` + 1 rows, the window's
      start capped at 2 * `frame_window`; set `frame_window` to the training window T. The position
      travels in the state: with frame-wise BN the state ends with a 0-dim int64 CPU tensor, the
      number of steps since the state was last None, so evaluation between training windows and
      repeated calls with one state do not disturb it. Needs `batch_norm` before or after.

    The bound is `u_bound` if given, else `magnitude ** (1 / timesteps)` (set `timesteps` to the
    training sequence length T), else 1.0 (the authors' advice for very long sequences). It is enforced
    by clamping u to [-bound, bound] after every optimizer step (`after_optimizer_step`).
    u is initialised U(0, bound) (the authors' code; U(0, 1) without a bound); with
    `last_layer_init` the last recurrence gets U((1/magnitude)^(1/T), bound), for tasks that read
    only the last step, chosen by index (the plain-net name-match bug of §1.3 is not copied).
    Linear weights are Kaiming-uniform with a = 8 and biases 0, as in the authors' PyTorch code
    (`input_init: kaiming_uniform`), or N(0, `input_init_std`) (`input_init: normal`), as the Theano
    adding-problem code (std 0.001, IndRNN reference §3.1), or Lasagne's HeNormal with gain √2/2
    (`input_init: he_normal`), as the Theano BN-before nets (PTB, §1.8); u is never decayed, the biases and BN
    parameters as the optimizer's `weight_decay_scope` says. BN's eps is `batch_norm_eps`: 1e-5 as
    the PyTorch code, 1e-4 in the Theano code (§1.5).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 2,
        architecture: Architecture = "plain",
        batch_norm: BatchNorm = "none",
        batch_norm_stats: BatchNormStats = "sequence",
        frame_window: int = 50,
        dropout: float = 0.0,
        timesteps: int | None = None,
        magnitude: float = 2.0,
        u_bound: float | None = None,
        last_layer_init: bool = False,
        growth_rate: int = 16,
        dense_first: int = 6,
        dense_blocks: tuple[int, ...] = (8, 6, 4),
        input_init: InputInit = "kaiming_uniform",
        input_init_std: float = 0.001,
        batch_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if input_init_std <= 0 or batch_norm_eps <= 0:
            raise ValueError(f"input_init_std and batch_norm_eps must be positive, got {input_init_std} and {batch_norm_eps}")
        if num_layers < 1 or not 0 <= dropout < 1 or magnitude <= 1:
            raise ValueError(f"need num_layers >= 1, 0 <= dropout < 1 and magnitude > 1, got {num_layers}, {dropout}, {magnitude}")
        if timesteps is not None and timesteps < 1:
            raise ValueError(f"timesteps must be positive, got {timesteps}")
        if last_layer_init and timesteps is None:
            raise ValueError("last_layer_init needs timesteps (its lower bound is (1/magnitude)^(1/timesteps))")
        if batch_norm_stats == "frame" and batch_norm == "none":
            raise ValueError("batch_norm_stats='frame' needs batch_norm before or after (there is no BN to take frame-wise statistics)")
        if frame_window < 1:
            raise ValueError(f"frame_window must be positive, got {frame_window}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.carries_position = batch_norm_stats == "frame"  # the state then carries the stream position
        self.architecture, self.dropout, self.dense_blocks = architecture, dropout, dense_blocks
        self.bound = u_bound if u_bound is not None else magnitude ** (1 / timesteps) if timesteps else 1.0
        linears, widths = self.layout(input_size, hidden_size, num_layers, architecture, growth_rate * dense_first, growth_rate, dense_blocks)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in linears)
        self.recurrences = nn.ModuleList(Recurrence(width, batch_norm, batch_norm_stats, frame_window, batch_norm_eps) for width in widths)
        for linear in self.linears:
            if input_init == "normal":
                nn.init.normal_(linear.weight, 0.0, input_init_std)
            elif input_init == "he_normal":
                nn.init.normal_(linear.weight, 0.0, HE_NORMAL_GAIN * linear.in_features**-0.5)
            else:
                nn.init.kaiming_uniform_(linear.weight, a=8)
            nn.init.zeros_(linear.bias)  # decayed or not by the optimizer's weight_decay_scope
        for recurrence in self.recurrences:
            nn.init.uniform_(recurrence.weight_hh, 0.0, self.bound)
        if last_layer_init:
            nn.init.uniform_(self.recurrences[-1].weight_hh, (1 / magnitude) ** (1 / timesteps), self.bound)

    @staticmethod
    def layout(n_in: int, n: int, layers: int, architecture: Architecture, first: int, k: int, blocks: tuple[int, ...]) -> tuple[list[tuple[int, int]], list[int]]:
        """(in, out) of every Linear and width of every recurrence, in the order `_run` uses them."""
        if architecture == "plain":
            return [(n_in, n)] + [(n, n)] * (layers - 1), [n] * layers
        if architecture == "residual":
            return [(n_in, n)] + [(n, n)] * (2 * layers), [n] * (2 * layers + 1)
        linears, widths, width = [(n_in, first)], [first], first
        for index, size in enumerate(blocks):
            for _ in range(size):
                linears += [(width, 4 * k), (4 * k, k)]
                widths += [4 * k, k]
                width += k
            out = width // 2 if index < len(blocks) - 1 else n
            linears.append((width, out))
            widths.append(out)
            width = out
        return linears, widths

    def after_optimizer_step(self) -> None:
        """Project u back into [-bound, bound] (the authors clamp the parameter data in place)."""
        with torch.no_grad():
            for recurrence in self.recurrences:
                recurrence.weight_hh.clamp_(-self.bound, self.bound)

    def forward(self, inputs: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self._run(inputs, state, reference=False)

    def forward_reference(self, inputs: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self._run(inputs, state, reference=True)

    def _run(self, inputs: Tensor, state: tuple[Tensor, ...] | None, reference: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
        start = 0
        if state is not None and self.carries_position:
            *state, position = state  # steps since the last reset: frame-wise BN's row index
            start = int(position)
        states = list(state) if state is not None else [None] * len(self.recurrences)
        finals: list[Tensor] = []
        linear = iter(self.linears)
        recurrences = iter(zip(self.recurrences, states))

        def lin(x: Tensor) -> Tensor:
            return next(linear)(x)

        def rec(x: Tensor) -> Tensor:
            recurrence, h0 = next(recurrences)
            out, last_hidden = recurrence(x, h0, reference, start)
            finals.append(last_hidden)
            return time_dropout(out, self.dropout, self.training)

        # Linears and recurrences are consumed in `layout` order: write one call per statement.

        x = inputs.transpose(0, 1)  # (T, B, I): every step reads contiguous memory
        if self.architecture == "plain":
            for _ in range(self.num_layers):
                x = rec(lin(x))
        elif self.architecture == "residual":
            x = lin(x)
            for _ in range(self.num_layers):
                y = lin(rec(x))
                x = x + lin(rec(y))
            x = rec(x)
        else:
            x = rec(lin(x))
            for size in self.dense_blocks:
                for _ in range(size):
                    y = rec(lin(x))
                    x = torch.cat([x, rec(lin(y))], dim=-1)
                x = rec(lin(x))  # transition (the last one maps to hidden_size)
        if self.carries_position:
            finals.append(torch.tensor(start + inputs.shape[1]))  # on the CPU: reading it back never syncs a GPU
        return x.transpose(0, 1), tuple(finals)
