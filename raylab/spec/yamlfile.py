"""A sweep file's text: its bytes and YAML (UTF-8, duplicate keys, nesting, non-finite numbers).

Each bad input is one line naming the file and the key; the contract is documented in docs/errors.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from raylab.spec.typecheck import ConfigError

MAX_DEPTH = 32  # a sweep file needs about 5 levels; anything far deeper is a generated or broken file
MAX_NODES = 100_000  # YAML aliases can make a small file expand without bound ("billion laughs")


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
    return parse_yaml_text(text, path)


def parse_yaml_text(text: str, path: Path) -> Any:
    """The YAML data of a file's text (`path` names it in errors; a file not yet written, too)."""
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


