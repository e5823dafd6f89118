"""What a checkpoint must hold beyond model and optimizer for a resumed trial to be the same trial.

Pure PyTorch (no Ray): `training.run_trial` puts these entries in its checkpoint dict and
`trainable.py` writes and reads the file with `save_checkpoint` / `load_checkpoint`.

- `rng`: the generators that draw dropout masks and other training-time noise: torch's CPU
  generator, the trial device's CUDA generator when it trains on a GPU, Python's and NumPy's.
- `carried_state`: the hidden state carried across the windows of an epoch (PTB's truncated BPTT),
  including IndRNN frame-wise BN's stream position, so a checkpoint that falls mid-epoch resumes
  from that state instead of zeros.

A checkpoint is always loaded onto the CPU: `torch.set_rng_state` accepts only a CPU byte tensor,
and a GPU checkpoint may be restored on another node. Model and optimizer tensors are moved to the
trial's device by `load_state_dict`; the carried state by `unpack_carried_state`, which puts each
tensor back on the kind of device it came from (the frame-BN position is a CPU tensor by contract).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_states(device: torch.device) -> dict[str, Any]:
    """Every generator's state, as tensors and plain data that `torch.load(weights_only=True)` reads."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), position, has_gauss, cached_gaussian),
    }


def restore_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Set the generators saved by `rng_states`; tensors may arrive on any device.

    A CUDA state is restored only when the trial trains on a GPU again (a trial moved to a CPU node
    computes differently anyway); a CPU checkpoint resumed on a GPU keeps the seeded CUDA generator.
    """
    torch.set_rng_state(states["torch"].cpu())
    if states.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)
    if states.get("python") is not None:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if states.get("numpy") is not None:
        name, keys, position, has_gauss, cached_gaussian = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))


def pack_carried_state(state: Any) -> dict[str, Any] | None:
    """The carried hidden state (a tensor or nested tuples of them) on the CPU, with each tensor's device type."""
    if state is None:
        return None
    devices: list[str] = []

    def to_cpu(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            devices.append(value.device.type)
            return value.detach().cpu()
        return type(value)(to_cpu(v) for v in value)

    return {"value": to_cpu(state), "devices": devices}


def unpack_carried_state(saved: dict[str, Any] | None, device: torch.device) -> Any:
    """Inverse of `pack_carried_state`: tensors that lived on the compute device go to `device`."""
    if saved is None:
        return None
    devices = iter(saved["devices"])

    def place(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device) if next(devices) != "cpu" else value.cpu()
        return type(value)(place(v) for v in value)

    return place(saved["value"])


CHECKPOINT_ENTRIES = ("model", "optimizer", "progress", "rng", "carried_state")  # "schedule" may be absent (raylab.networks.schedules)


def check_entries(checkpoint: dict[str, Any]) -> None:
    """Refuse a checkpoint without the entries an exact resume needs (one written by an older raylab)."""
    missing = [name for name in CHECKPOINT_ENTRIES if name not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint has no {', '.join(missing)} (written by an older raylab?): it cannot resume exactly; restart the trial (raylab resume --errored restart)")


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    torch.save(checkpoint, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint on the CPU, whatever device wrote it (see the module docstring)."""
    return torch.load(path, map_location="cpu", weights_only=True)
