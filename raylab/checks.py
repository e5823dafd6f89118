"""Checks that run before anything runs: each bad input is one line naming the file and the key.

Everything here is cheap and Ray-free: the sweep file's bytes and YAML (UTF-8, duplicate keys,
nesting, non-finite numbers), options that do nothing for the chosen optimizer, trials that would be
computed twice or averaged under one label, models too large for any device, and the storage
location. The contract is documented in docs/errors.md.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from raylab.typecheck import ConfigError

MAX_DEPTH = 32  # a sweep file needs about 5 levels; anything far deeper is a generated or broken file
MAX_NODES = 100_000  # YAML aliases can make a small file expand without bound ("billion laughs")
MAX_NAME_LENGTH = 100  # folder names: the name, "-smoke" and Tune's run and trial folders stay far below 255 bytes
SEED_LIMIT = 2**32  # NumPy's seeds are 32-bit: larger seeds would alias (s and s + 2**32 train identically)
MAX_PARAMETERS = 2**33  # 16 bytes each (weights, gradients, two optimizer moments) exceed any single accelerator
REACH_TIMEOUT_S = 10  # a bucket that has not answered by then is unreachable
# Optimizer options that the other optimizer ignores: setting one is a mistake, not a no-op.
ONLY_FOR = {"alpha": "rmsprop", "betas": "adam"}


class StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise ConfigError(f"line {line}: key {key!r} given twice (first on line {seen[key]})")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(path: Path) -> Any:
    """The YAML data of a file, refusing non-UTF-8 bytes, duplicate keys and absurd nesting."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start} is {path.read_bytes()[error.start]:#04x})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}") from None
    check_plain_data(data)
    return data


def check_plain_data(data: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH, more than MAX_NODES values, and NaN or infinite numbers.

    Iterative, so that the check itself cannot overflow the stack. Keys are reported as dotted paths
    (`optimizer.lr`, `variants[1].optimizer.lr`).
    """
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    nodes = 0
    while stack:
        where, value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ConfigError(f"more than {MAX_NODES} values (YAML aliases expanding without bound?)")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where or 'top level'}: nested too deeply (more than {MAX_DEPTH} levels)")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: must be a finite number, got {value}")
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), item, depth + 1) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item, depth + 1) for i, item in enumerate(value))


def check_sweep_name(name: str) -> None:
    """A sweep name is a folder name on every filesystem and URI: short, printable, no separators."""
    if not name or name in (".", "..") or name.startswith("."):
        raise ConfigError(f"name: must be a non-empty folder name not starting with '.', got {name!r}")
    bad = sorted({c for c in name if c in '/\\:*?"<>|' or not c.isprintable()})
    if bad:
        raise ConfigError(f"name: {name!r} cannot be a folder name (it contains {', '.join(repr(c) for c in bad)})")
    if len(name.encode()) > MAX_NAME_LENGTH:
        raise ConfigError(f"name: {len(name.encode())} bytes long, at most {MAX_NAME_LENGTH} (it names the results folder)")


def check_seeds(seeds: list[int]) -> None:
    """The seed rule: integers in [0, 2**32), so that two distinct seeds never train the same trial."""
    for i, seed in enumerate(seeds):
        if not 0 <= seed < SEED_LIMIT:
            raise ConfigError(f"seeds[{i}]: {seed} is outside 0 <= seed < 2**32 (larger seeds would alias smaller ones)")


def check_distinct(values: list, where: str) -> None:
    """`hidden_sizes: [64, 64]` would train every trial of size 64 twice."""
    for i, value in enumerate(values):
        if value in values[:i]:
            raise ConfigError(f"{where}[{i}]: {value} is listed twice (the same trials would run twice)")


def check_optimizer_options(data: dict) -> None:
    """`alpha` with Adam, `betas` with RMSprop: options the chosen optimizer would silently ignore.

    The sweep's optimizer is checked against its own name; a variant's against its effective name (its
    own, else the sweep's), so a sweep-level RMSprop `alpha` stays valid beside an Adam variant.
    """
    base = data.get("optimizer") if isinstance(data.get("optimizer"), dict) else {}
    base_name = base.get("name", "rmsprop")
    places = [("optimizer", base, base_name)]
    for i, variant in enumerate(data.get("variants") or []):
        own = variant.get("optimizer") if isinstance(variant, dict) else None
        if isinstance(own, dict):
            places.append((f"variants[{i}].optimizer", own, own.get("name", base_name)))
    for where, options, name in places:
        for key, wanted in ONLY_FOR.items():
            if key in options and name != wanted:
                raise ConfigError(f"{where}.{key}: only applies to {wanted}, but the optimizer is {name}")


def check_variant_labels(spec: Any) -> None:
    """One label, one configuration: two variants under one label (e.g. `rnn` and `lstm` both labelled
    X, or two unlabelled `lstm` with different learning rates) would be averaged into one table row.

    Variants that share a label but have explicitly disjoint `hidden_sizes` make distinct rows and
    are allowed (e.g. a learning rate per size). Labels are compared within the `variants` list only.
    """
    from raylab.config import dump, merged_optimizer
    from raylab.model import check_cell_spec

    seen: dict[str, int] = {}
    for index in range(len(spec.variants)):
        label = spec.variant_label(index)
        first = seen.setdefault(label, index)
        if first == index:
            continue
        a, b = spec.variants[first], spec.variants[index]
        if a.hidden_sizes is not None and b.hidden_sizes is not None and not set(a.hidden_sizes) & set(b.hidden_sizes):
            continue
        differing = [
            name
            for name, left, right in (
                ("cell", check_cell_spec(a.cell, f"variants[{first}].cell"), check_cell_spec(b.cell, f"variants[{index}].cell")),
                ("optimizer", dump(merged_optimizer(spec, first)), dump(merged_optimizer(spec, index))),
                ("hidden_sizes", a.hidden_sizes, b.hidden_sizes),
            )
            if left != right
        ]
        if differing:
            raise ConfigError(
                f"variants[{index}].label: {label!r} is also variants[{first}]'s label, with a different "
                f"{' and '.join(differing)}; one table row would average both: give each variant its own label"
            )
        raise ConfigError(f"variants[{index}]: repeats variants[{first}] (same label, cell, optimizer and sizes): its trials would run twice")


def check_distinct_trials(trials: list[dict]) -> None:
    """No trial computed twice: identical variants under different labels, two budgets that solve to
    the same hidden size, a size in a variant's own list and the sweep's."""
    seen: dict[str, dict] = {}
    for trial in trials:
        first = seen.setdefault(trial["config_hash"], trial)
        if first is not trial:
            twice = f"{first['variant']!r} and {trial['variant']!r}" if first["variant"] != trial["variant"] else repr(trial["variant"])
            raise ConfigError(
                f"variants: identical trials ({twice}, hidden size {trial['hidden_size']}, seed {trial['seed']}) "
                "would run twice; remove the repeated variant, size or budget"
            )


def check_hidden_size(hidden_size: int, where: str) -> None:
    """Above budget.MAX_HIDDEN units even building a model on the meta device is not cheap (the
    orthogonal cells keep N x N index tensors on the CPU), and no experiment of the seeds comes near."""
    from raylab.budget import MAX_HIDDEN

    if hidden_size > MAX_HIDDEN:
        raise ConfigError(f"{where}: hidden size {hidden_size} is above raylab's limit of {MAX_HIDDEN}")


def check_model_size(n_params: int, hidden_size: int, where: str) -> None:
    if n_params > MAX_PARAMETERS:
        raise ConfigError(
            f"{where}: hidden size {hidden_size} gives {n_params:,} parameters, more than {MAX_PARAMETERS:,} "
            "(with gradients and optimizer state, more memory than any single device has)"
        )


def check_storage(location: str) -> None:
    """The storage location can be written, checked without writing anything.

    A local path: the path (or its nearest existing parent) is a writable folder. A URI: a known
    scheme whose bucket answers. Each problem is one line naming `storage`.
    """
    from raylab import storage

    if storage.is_uri(location):
        import pyarrow as pa
        import pyarrow.fs as pafs

        try:
            fs, path = answering_filesystem(location)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as error:
            scheme = location.split("://", 1)[0]
            raise ConfigError(f"storage: {location}: unknown or unsupported URI scheme {scheme!r} ({first_line(error)})") from None
        except OSError as error:
            raise ConfigError(f"storage: {location}: cannot reach it ({first_line(error)})") from None
        try:
            info = fs.get_file_info(path)
        except OSError as error:  # no such bucket, no credentials, no network
            raise ConfigError(f"storage: {location}: cannot reach it ({first_line(error)})") from None
        if info.type == pafs.FileType.File:
            raise ConfigError(f"storage: {location}: is a file, not a folder")
        return
    path = Path(location).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"storage: {location}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"storage: {location}: {existing} is not writable")


def answering_filesystem(location: str) -> tuple[Any, str]:
    """storage.filesystem, but a Google Cloud Storage client that gives up after REACH_TIMEOUT_S
    (its default retries for 15 minutes when there are no credentials or no network)."""
    from datetime import timedelta

    import pyarrow.fs as pafs

    from raylab import storage

    scheme, _, path = location.partition("://")
    if scheme in ("gs", "gcs") and "?" not in path:
        return pafs.GcsFileSystem(retry_time_limit=timedelta(seconds=REACH_TIMEOUT_S)), path
    return storage.filesystem(location)


def first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_data(trials: list[dict], data_dir: str | None) -> None:
    """Load every distinct task's data once on the driver (a download happens here, once), so that a
    missing or corrupt file is one line before any trial starts, not a traceback from every trial."""
    import json

    import torch

    from raylab.data import DataError
    from raylab.registry import build
    from raylab.tasks import TASKS

    seen = set()
    for trial in trials:
        key = json.dumps(trial["task"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        task = build(TASKS, trial["task"], "task")
        try:
            task.setup(torch.device("cpu"), data_dir)
        except DataError as error:
            raise ConfigError(f"task {trial['task']['name']!r}: {error}") from None
