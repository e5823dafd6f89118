"""Optimizers from per-parameter tags: cells tag parameters (`raylab.cells.tags`), only this module
builds optimizers.

Untagged parameters get the spec's `weight_decay` if they fall within its `weight_decay_scope`
(WEIGHT_DECAY_SCOPES), which sorts them by role: a bias (a module's `bias`, `bias_*` or `*_bias`
parameter: BN betas, RNN input biases, modReLU biases), a normalisation scale (the `weight` of a BatchNorm, LayerNorm, GroupNorm or of a
module that declares `is_normalization = True`), or a weight (everything else: Linear and embedding
weights, readouts). Roles come from the module tree, never from substrings of dotted names.
"""

from __future__ import annotations

import torch
from torch import nn

from raylab.spec.config import OptimizerSpec

NORMALIZATION_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
# scope -> the roles whose untagged parameters get the sweep's weight decay
WEIGHT_DECAY_SCOPES = {
    "no_bias": {"weight", "norm"},  # IndRNN MNIST (PyTorch: `'weight_hh' in name or 'bias' in name` exempt) and PTB (Theano: Lasagne's regularizable params)
    "no_bias_no_norm": {"weight"},  # IndRNN PyTorch PTB code without --bn_decay
    "all": {"weight", "norm", "bias"},  # torch.optim's `weight_decay` on every parameter
}


def is_normalization(module: nn.Module) -> bool:
    return isinstance(module, NORMALIZATION_TYPES) or getattr(module, "is_normalization", False)


def parameter_roles(model: nn.Module) -> list[tuple[nn.Parameter, str]]:
    """(parameter, "weight" | "bias" | "norm") in `model.parameters()` order, each shared parameter once."""
    roles, seen = [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue  # a tied weight (PTB decoder = embedding) belongs to its first owner
            seen.add(id(param))
            if name == "bias" or name.startswith("bias_") or name.endswith("_bias"):
                role = "bias"
            elif is_normalization(module) and name == "weight":
                role = "norm"
            else:
                role = "weight"
            roles.append((param, role))
    return roles


def parameter_groups(model: nn.Module, spec: OptimizerSpec) -> list[dict]:
    """One group per distinct (lr, weight_decay), in first-seen order so state dicts are stable."""
    decayed_roles = WEIGHT_DECAY_SCOPES[spec.weight_decay_scope]
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for param, role in parameter_roles(model):
        if not param.requires_grad:
            continue
        settings = getattr(param, "_optim", {})
        lr_field = settings.get("lr", "lr")
        lr = getattr(spec, lr_field)
        if lr is None:
            lr = spec.lr
        weight_decay = settings.get("weight_decay", spec.weight_decay if role in decayed_roles else 0.0)
        groups.setdefault((lr, weight_decay), []).append(param)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def build_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """RMSprop (with alpha) or Adam (with betas) over tagged parameter groups.

    Both the main and the orthogonal groups share alpha / betas, as in the nnRNN code (§10.3).
    """
    groups = parameter_groups(model, spec)
    if spec.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=spec.lr, alpha=spec.alpha, eps=spec.eps)
    return torch.optim.Adam(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
