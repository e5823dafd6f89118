"""`raylab ls cells|tasks`: what a sweep file can name, each option with its allowed values and default.

For tasks also the metrics each reports (direction, the primary one, the trivial baseline where the
task has one) and the optimizer's options, which every sweep file's `optimizer:` section takes.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from raylab.spec.config import OptimizerSpec
from raylab.spec.registry import describe_entries, describe_option
from raylab.training.metrics import metric_mode

INDENT = "    "


def entry_lines(name: str, description: str, options: list[str]) -> list[str]:
    lines = [f"{name}: {description}", f"{INDENT}options:" + ("" if options else " none")]
    return lines + [f"{INDENT * 2}{option}" for option in options]


def cell_lines() -> list[str]:
    from raylab.cells import CELLS, INJECTED_CELL_ARGS  # torch: only when cells are listed

    return [line for entry in describe_entries(CELLS, INJECTED_CELL_ARGS) for line in entry_lines(*entry)]


def metric_lines(task: typing.Any) -> list[str]:
    """`val/loss  min, primary, trivial baseline 0.0945` for each metric a task reports."""
    baseline = getattr(task, "baselines", {})  # keyed without the split: `loss`, `acc`
    splits = ("train", *task.eval_splits, *task.final_splits)
    lines = []
    for metric in (f"{split}/{name}" for split in splits for name in task.metric_names()):
        notes = [metric_mode(metric)]
        if metric == task.primary_metric:
            notes.append("primary: picks the best checkpoint")
        name = metric.split("/", 1)[-1]
        if name in baseline:
            notes.append(f"trivial baseline {baseline[name]:.4g} with the default options")
        lines.append(f"{INDENT * 2}{metric:<12} {', '.join(notes)}")
    return lines


def optimizer_lines() -> list[str]:
    hints = typing.get_type_hints(OptimizerSpec)
    options = [describe_option(f.name, hints[f.name], f.default) for f in dataclasses.fields(OptimizerSpec)]
    return entry_lines("optimizer", "the sweep's `optimizer:` section (a variant's `optimizer:` overrides it)", options)


def task_lines() -> list[str]:
    from raylab.tasks import TASKS  # torch: only when tasks are listed

    lines = []
    for name, description, options in describe_entries(TASKS):
        lines += entry_lines(name, description, options)
        lines += [f"{INDENT}metrics (with the default options; train/ metrics are means over the steps since the last evaluation):"]
        lines += metric_lines(TASKS[name]())
    return lines + optimizer_lines()


def cmd_ls(args: argparse.Namespace) -> int:
    print("\n".join(cell_lines() if args.kind == "cells" else task_lines()))
    return 0
