"""Per-parameter optimizer settings, as tags on the parameter: the one way a cell says that a
parameter trains differently (cells never build optimizers; `raylab.networks.optim` reads the tags).

A tag is a dict on the parameter, `param._optim`, with any of:
- `lr`: the name of the optimizer-spec field that holds this parameter's learning rate
  (`"lr_orth"` for log-orthogonal parameters; falls back to `lr` when the sweep leaves it unset);
- `weight_decay`: a number (nnRNN's T decay, 0 for IndRNN's u); it overrides the spec's decay.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def tag(param: nn.Parameter, **settings: Any) -> nn.Parameter:
    """Attach optimizer settings to a parameter; returns it for use in assignments."""
    param._optim = {**getattr(param, "_optim", {}), **settings}
    return param
