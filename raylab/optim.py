"""Optimizers from per-parameter tags: cells tag parameters, only this module builds optimizers.

A tag is a dict on the parameter, `param._optim`, with any of:
- `lr`: the name of the optimizer-spec field that holds this parameter's learning rate
  (`"lr_orth"` for log-orthogonal parameters; falls back to `lr` when the sweep leaves it unset);
- `weight_decay`: a number (nnRNN's T decay); untagged parameters get the spec's `weight_decay`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from raylab.config import OptimizerSpec


def tag(param: nn.Parameter, **settings: Any) -> nn.Parameter:
    """Attach optimizer settings to a parameter; returns it for use in assignments."""
    param._optim = {**getattr(param, "_optim", {}), **settings}
    return param


def parameter_groups(params: Iterable[nn.Parameter], spec: OptimizerSpec) -> list[dict]:
    """One group per distinct (lr, weight_decay), in first-seen order so state dicts are stable."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for param in params:
        if not param.requires_grad:
            continue
        settings = getattr(param, "_optim", {})
        lr_field = settings.get("lr", "lr")
        lr = getattr(spec, lr_field)
        if lr is None:
            lr = spec.lr
        weight_decay = settings.get("weight_decay", spec.weight_decay)
        groups.setdefault((lr, weight_decay), []).append(param)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def build_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """RMSprop (with alpha) or Adam (with betas) over tagged parameter groups.

    Both the main and the orthogonal groups share alpha / betas, as in the nnRNN code (§10.3).
    """
    groups = parameter_groups(model.parameters(), spec)
    if spec.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=spec.lr, alpha=spec.alpha, eps=spec.eps)
    return torch.optim.Adam(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
