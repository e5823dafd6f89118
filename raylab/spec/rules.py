"""Rules of the sweep-file language that need no model: folder-safe names, the seed rule, lists
without repeats, and options the chosen optimizer would silently ignore (docs/errors.md)."""

from __future__ import annotations

from raylab.spec.typecheck import ConfigError, shorten

MAX_NAME_LENGTH = 100  # folder names: the name, "-smoke" and Tune's run and trial folders stay far below 255 bytes
SEED_LIMIT = 2**32  # NumPy's seeds are 32-bit: larger seeds would alias (s and s + 2**32 train identically)
# Optimizer options that the other optimizer ignores: setting one is a mistake, not a no-op.
ONLY_FOR = {"alpha": "rmsprop", "betas": "adam"}


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
    seen: set[int] = set()
    for i, seed in enumerate(seeds):
        if not 0 <= seed < SEED_LIMIT:
            raise ConfigError(f"seeds[{i}]: {seed} is outside 0 <= seed < 2**32 (larger seeds would alias smaller ones)")
        if seed in seen:
            raise ConfigError(f"seeds[{i}]: {seed} is listed twice (the same trials would run twice)")
        seen.add(seed)


def expand_seeds(value: object) -> object:
    """`seeds: {range: [start, stop]}` -> [start, ..., stop - 1] (Python's half-open range), the short
    form for many seeds; a list (or anything else, for the type check to name) is returned as it is."""
    if not isinstance(value, dict):
        return value
    if set(value) != {"range"}:
        raise ConfigError(f"seeds: a mapping must be {{range: [start, stop]}}, got the keys {sorted(map(str, value))}")
    bounds = value["range"]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
        raise ConfigError(f"seeds.range: expected [start, stop], two integers, got {shorten(repr(bounds))}")
    start, stop = bounds
    if not 0 <= start < stop <= SEED_LIMIT:
        raise ConfigError(f"seeds.range: [{start}, {stop}] must satisfy 0 <= start < stop <= 2**32 (the seeds start, ..., stop - 1)")
    return list(range(start, stop))


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


