"""Encoder -> recurrent cell -> readout: the one model shape every task uses."""

from __future__ import annotations

import contextlib
import inspect
import sys
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


# The batch of the forward check: small, and batch != steps, so that a cell that returns time-major
# outputs (T, B, H) or a bare tensor (unpacked along its first dimension) cannot pass by accident.
CHECK_BATCH, CHECK_STEPS = 2, 3
# Parameters up to which the check runs on the CPU with real values (at most 40 MB, built in
# milliseconds). Larger models run it on the meta device, whose first compute operation imports
# PyTorch's Python meta kernels and torch._dynamo: 4 to 7 s on the 2-core development machine, a cost
# a small model need not pay (and a cell that reads a value, `.item()`, cannot run on meta at all).
CPU_CHECK_LIMIT = 10_000_000


def check_forward(task: Task, task_name: str, cell_spec: dict, hidden_size: int, cell_where: str, task_where: str, on_gpu: bool = False) -> None:
    """Build the model and run its cell and readout once, as the training loop calls them, on a batch
    of the task's feature shape; one ConfigError naming the cell (or the task, for its readout) when
    a call fails or returns the wrong shapes.

    What is checked: `cell(inputs, None)` returns `(outputs, state)` with outputs (B, T, hidden_size);
    the cell takes that state back (detached, as the loop carries it across truncated-BPTT windows);
    the readout gives (B, T, output_size), or (B, output_size) for a task that reads out the last step;
    a penalty is a scalar. The task's encoder and loss are not run: they need the task's data.
    A model of up to CPU_CHECK_LIMIT parameters runs on the CPU (the driver's random state is left as
    it was); a larger one on the meta device, where a failure may also be an operation that has no
    meta kernel: that is a warning, not a refusal. So is a call that fails on the CPU when the trials
    run on a GPU (`on_gpu`): a cell may use a GPU-only kernel. A forward whose signature cannot take
    `(inputs, state)` is refused everywhere.
    """
    with on_meta_device():
        model = build_model(task, cell_spec, hidden_size, cell_where)
    name = cell_spec["name"]
    if count_parameters(model) <= CPU_CHECK_LIMIT:
        with torch.random.fork_rng(devices=[]):
            try:
                forward_shapes(build_model(task, cell_spec, hidden_size, cell_where), task, task_name, name, cell_where, task_where)
            except ConfigError:
                raise
            except Exception as error:
                failed = (f"{cell_where}.name: {name}: forward(inputs, None) fails on inputs of shape "
                          f"({CHECK_BATCH}, {CHECK_STEPS}, {task.input_size}) (batch, steps, input_size): {one_line(error)}")
                if meta_leaked(error):
                    # The cell kept a tensor from raylab's meta-device build above (a module-level cache, say): that
                    # happens only in this validating process; every trial runs in a fresh worker (user code).
                    print(f"raylab: warning: {failed}; a tensor from raylab's meta-device parameter count reached the CPU check "
                          "(a module-level cache?), so the forward is not checked here; trials run in fresh processes", file=sys.stderr, flush=True)
                    return
                if not on_gpu:
                    raise ConfigError(failed) from None
                print(f"raylab: warning: {failed} on the CPU; not refused, since the trials run on a GPU", file=sys.stderr, flush=True)
        return
    try:
        with on_meta_device():
            forward_shapes(model, task, task_name, name, cell_where, task_where)
    except ConfigError:
        raise
    except Exception as error:
        print(f"raylab: warning: {cell_where}.name: {name}: forward not checked before Ray starts: at hidden size {hidden_size} it "
              f"is checked on the meta device, where it fails ({one_line(error)}); a bug, or an operation with no meta kernel",
              file=sys.stderr, flush=True)


def meta_leaked(error: Exception) -> bool:
    """A CPU computation met a meta tensor (PyTorch's words for it), i.e. state kept from a meta build."""
    text = str(error)
    return "meta tensor" in text or "device='meta'" in text or "meta device" in text


def one_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def forward_shapes(model: SequenceModel, task: Task, task_name: str, name: str, cell_where: str, task_where: str) -> None:
    """`check_forward`'s calls on the model's device; a failing call raises its own exception."""
    hidden_size = model.cell.hidden_size if hasattr(model.cell, "hidden_size") else None
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else None
    features = torch.zeros(CHECK_BATCH, CHECK_STEPS, task.input_size, device=device)  # (B, T, I)

    try:
        inspect.signature(model.cell.forward).bind(features, None)  # how the loop calls it, on any device
    except TypeError as error:
        raise ConfigError(f"{cell_where}.name: {name}: forward must take (inputs, state), as the loop calls it: {error}") from None

    def cell_outputs(state: Any, call: str) -> tuple[Tensor, Any]:
        result = model.cell(features, state)
        if not (isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], Tensor)):
            got = f"a tensor of shape {tuple(result.shape)}" if isinstance(result, Tensor) else type(result).__name__
            raise ConfigError(f"{cell_where}.name: {name}: {call} must return (outputs, state), got {got}")
        shape = tuple(result[0].shape)
        if len(shape) != 3 or shape[:2] != (CHECK_BATCH, CHECK_STEPS) or (hidden_size is not None and shape[2] != hidden_size):
            raise ConfigError(
                f"{cell_where}.name: {name}: {call} on inputs of shape {tuple(features.shape)} (batch, steps, input_size) returned "
                f"outputs of shape {shape}, expected {(CHECK_BATCH, CHECK_STEPS, hidden_size)} (batch, steps, hidden_size)"
            )
        return result[0], result[1]

    hidden, state = cell_outputs(None, "forward(inputs, None)")
    try:
        cell_outputs(detach_state(state), "forward(inputs, state)")
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(f"{cell_where}.name: {name}: forward(inputs, state) fails on the state its own forward returned "
                          f"(the loop carries it across truncated-BPTT windows): {one_line(error)}") from None
    read = hidden[:, -1] if model.readout_mode == "last" else hidden  # (B, H) or (B, T, H)
    try:
        outputs = model.readout(read)
    except Exception as error:
        raise ConfigError(f"{task_where}.name: {task_name}: its readout fails on hidden states of shape {tuple(read.shape)}: {one_line(error)}") from None
    wanted = (*read.shape[:-1], task.output_size)
    if not isinstance(outputs, Tensor) or tuple(outputs.shape) != wanted:
        got = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ConfigError(f"{task_where}.name: {task_name}: its readout maps hidden states {tuple(read.shape)} to {got}, expected {wanted} (output_size {task.output_size})")
    penalty = model.penalty()
    if penalty is not None and not (isinstance(penalty, Tensor) and penalty.dim() == 0):
        got = f"a tensor of shape {tuple(penalty.shape)}" if isinstance(penalty, Tensor) else type(penalty).__name__
        raise ConfigError(f"{cell_where}.name: {name}: penalty() must return a scalar tensor (it is added to the loss), got {got}")


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
