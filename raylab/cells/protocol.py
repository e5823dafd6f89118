"""The contract every recurrent cell follows.

A cell is an `nn.Module` that maps a whole batch-first sequence to its hidden states:

    outputs, state = cell(inputs, state)      # inputs (B, T, input_size) -> outputs (B, T, hidden_size)

`state` is None (zeros) or whatever the previous call returned (a tensor, or a tuple of tensors for
the LSTM): the training loop carries it across truncated-BPTT windows after detaching it.

`forward` is the fast path (fused kernels, whole-sequence projections). `forward_reference` runs the
same maths one time step at a time in plain Python, the structure of the original implementations;
tests check that the two agree.

Optional hooks, looked up with `getattr` by the training loop:
- `penalty() -> Tensor`: a regulariser added to the task loss (nnRNN's delta * sum (gamma - 1)^2).
- `after_optimizer_step() -> None`: a projection after every optimizer step (IndRNN's |u| bound).

Per-parameter optimizer settings are tags (`raylab.cells.tags.tag`), never optimizers built by cells.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

State = Any  # Tensor (B, H), or a tuple of them


@runtime_checkable
class RecurrentCell(Protocol):
    input_size: int
    hidden_size: int

    def forward(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """(B, T, input_size) -> (B, T, hidden_size) hidden states and the final state."""
        ...

    def forward_reference(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Same result as `forward`, one Python step per time step."""
        ...
