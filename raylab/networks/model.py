"""Encoder -> recurrent cell -> readout: the one model shape every task uses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from raylab.cells import CELLS, INJECTED_CELL_ARGS
from raylab.spec.registry import build, check_options, lookup, split_spec
from raylab.tasks.protocol import Task
from raylab.spec.typecheck import ConfigError


class SequenceModel(nn.Module):
    """`readout(cell(encoder(inputs)))`, reading out every step or only the last one."""

    def __init__(self, encoder: nn.Module, cell: nn.Module, readout: nn.Module, readout_mode: str) -> None:
        super().__init__()
        self.encoder, self.cell, self.readout, self.readout_mode = encoder, cell, readout, readout_mode

    def forward(self, inputs: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        features = self.encoder(inputs)  # (B, T, I)
        hidden, state = self.cell(features, state)  # (B, T, H)
        if self.readout_mode == "last":
            hidden = hidden[:, -1]  # (B, H)
        return self.readout(hidden), state

    def penalty(self) -> Tensor | None:
        """The cell's regulariser (e.g. nnRNN's delta term), or None."""
        penalty = getattr(self.cell, "penalty", None)
        return penalty() if penalty is not None else None

    def after_optimizer_step(self) -> None:
        hook = getattr(self.cell, "after_optimizer_step", None)
        if hook is not None:
            hook()


def build_cell(cell_spec: Any, input_size: int, hidden_size: int, where: str = "cell") -> nn.Module:
    return build(CELLS, cell_spec, where, input_size=input_size, hidden_size=hidden_size)


def check_cell_spec(cell_spec: Any, where: str = "cell") -> dict:
    """Validate a cell spec's name and options without building it."""
    name, _ = split_spec(CELLS, cell_spec, where)
    if name not in CELLS:
        check_user_cell(lookup(CELLS, name, where), name, where)
    return check_options(CELLS, cell_spec, where, INJECTED_CELL_ARGS)


def check_user_cell(factory: Any, name: str, where: str) -> None:
    """A cell named by import path: an nn.Module with its own `forward` that takes input and hidden size.

    `forward_reference`, `penalty` and `after_optimizer_step` stay optional, as for built-in cells.
    """
    import inspect

    if not (inspect.isclass(factory) and issubclass(factory, nn.Module)):
        raise ConfigError(f"{where}.name: {name} is not a torch.nn.Module class")
    if factory.forward is nn.Module.forward:
        raise ConfigError(f"{where}.name: {name} has no forward(inputs, state) method")
    missing = [arg for arg in INJECTED_CELL_ARGS if arg not in inspect.signature(factory).parameters]
    if missing:
        raise ConfigError(f"{where}.name: {name}.__init__ must take {' and '.join(INJECTED_CELL_ARGS)} (raylab passes them); missing {', '.join(missing)}")


def build_model(task: Task, cell_spec: Any, hidden_size: int, where: str = "cell") -> SequenceModel:
    cell = build_cell(cell_spec, task.input_size, hidden_size, where)
    return SequenceModel(task.encoder(), cell, task.readout(hidden_size), task.readout_mode)


class _NoRandomFillOnMeta(TorchFunctionMode):
    """Skip random fills of meta tensors, which hold no values anyway.

    PyTorch runs `normal_` on a meta tensor through its Python reference implementation, whose first
    call imports torch._dynamo: 1.2 to 1.9 s of every `raylab run` on 2 cores, spent on values that
    do not exist (benchmarks/sweep.py). Fills with a meta kernel (`uniform_`, `zero_`) run as usual.
    """

    # nn.init.normal_ dispatches as a function of its own; xavier_normal_ and kaiming_normal_ reach Tensor.normal_.
    RANDOM_FILLS = frozenset({nn.init.normal_, Tensor.normal_, Tensor.log_normal_, Tensor.exponential_, Tensor.cauchy_, Tensor.geometric_})

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - PyTorch's signature
        kwargs = kwargs or {}
        if func in self.RANDOM_FILLS:
            filled = args[0] if args else kwargs.get("tensor", kwargs.get("self"))  # nn.init passes it by keyword
            if isinstance(filled, Tensor) and filled.is_meta:
                return filled
        return func(*args, **kwargs)


@contextlib.contextmanager
def on_meta_device() -> Iterator[None]:
    """Build modules on the meta device (shapes only: no memory, no initialisation), to count parameters."""
    with torch.device("meta"), _NoRandomFillOnMeta():
        yield


def count_parameters(model: nn.Module) -> int:
    """Free (trainable) parameters; cells store only free entries, so this is the papers' count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def detach_state(state: Any) -> Any:
    """Cut the graph of a carried hidden state (truncated BPTT)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)
