"""trials.parquet's rows -> one Arrow table, the same whatever the rows' order or where they come from.

`arrow_table(rows)` makes the table of a collect from scratch. An incremental collect
(raylab/results/incremental.py) takes most rows from the previous trials.parquet, as Arrow columns,
and only the rest from new row dicts; `assembled_table` gives it the table `arrow_table` makes of
the same rows, without turning the previous ones back into dicts. Two rules make that possible:

- the columns come in one fixed order (`column_order`), not in the order the rows first name them;
- a column's type follows the Python types of its values (`column_array`): ints and floats
  together become floats, any other mix becomes text, and so does an integer beyond 64 bits. A
  column of one Python type (int64, double, string, bool) gives back exactly the values it was
  made from; a column that mixed types does not (3 became 3.0, or '3'), so whoever assembles later
  must keep those values as they were (`Assembled.mixed`, kept in the collect's cache).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# trials.parquet's own columns, in the order of docs/results.md; then the groups, each by name.
LEADING_COLUMNS = (
    "trial_id", "run", "config_hash", "status", "variant", "task", "cell", "task_label", "budget", "hidden_size", "seed",
    "n_params", "steps", "wall_time_s", "error", "git_commit", "search_base", "search_samples", "trial_json", "user_code",
    "code_version",
)
COLUMN_GROUPS = ("version.", "config.", "final/", "best/")
# Arrow types that give back the Python values they were made of, and those values' type.
SINGLE_KINDS = {pa.int64(): int, pa.float64(): float, pa.string(): str, pa.bool_(): bool}


def column_order(names: Iterable[str]) -> list[str]:
    """The leading columns as docs/results.md lists them, then `version.*`, `config.*`, `final/*`,
    `best/*` and anything else, each group by name."""
    leading = {name: index for index, name in enumerate(LEADING_COLUMNS)}

    def rank(name: str) -> tuple[int, int, str]:
        if name in leading:
            return (0, leading[name], "")
        group = next((i for i, prefix in enumerate(COLUMN_GROUPS) if name.startswith(prefix)), len(COLUMN_GROUPS))
        return (1 + group, 0, name)

    return sorted(names, key=rank)


def column_array(values: list) -> tuple[pa.Array, bool]:
    """One column's values -> an Arrow array, and whether its type hides the values' own types
    (ints and floats together as floats, a mix or an integer beyond 64 bits as text)."""
    kinds = {type(v) for v in values if v is not None}
    if kinds == {int, float}:
        return pa.array([None if v is None else float(v) for v in values]), True
    if len(kinds) > 1:
        return pa.array([None if v is None else str(v) for v in values]), True
    try:
        return pa.array(values), False
    except (pa.ArrowException, OverflowError):  # e.g. an integer beyond 64 bits: kept, as text
        return pa.array([None if v is None else str(v) for v in values]), True


def arrow_table(rows: list[dict]) -> pa.Table:
    """Rows -> Arrow, with a column of mixed Python types stored as text instead of failing."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return pa.table({name: column_array([row.get(name) for row in rows])[0] for name in column_order(names)})


@dataclasses.dataclass(frozen=True)
class PreviousRow:
    """A row of the previous table: its position there, the keys its dict had, and the values of
    its mixed-type columns as they were."""

    position: int
    keys: frozenset[str]
    mixed: dict[str, Any]


@dataclasses.dataclass
class Assembled:
    table: pa.Table
    mixed: list[dict[str, Any]]  # per row, the values of the table's mixed-type columns that the row has


def assembled_table(rows: list[dict | PreviousRow], previous: pa.Table | None) -> Assembled:
    """The table `arrow_table` makes of `rows` (dicts, or rows of `previous`), in their order."""
    names: dict[str, None] = {}
    keysets = {id(row.keys): row.keys for row in rows if isinstance(row, PreviousRow)}  # a few, shared by many rows
    for keys in keysets.values():
        names.update(dict.fromkeys(keys))
    for row in rows:
        if not isinstance(row, PreviousRow):
            names.update(dict.fromkeys(row))
    old_slots = [i for i, row in enumerate(rows) if isinstance(row, PreviousRow)]
    new_slots = [i for i, row in enumerate(rows) if not isinstance(row, PreviousRow)]
    taken = previous.take(pa.array([rows[i].position for i in old_slots], pa.int64())) if old_slots else None
    into_order = [0] * len(rows)  # the old rows, then the new ones -> the rows' own order
    for j, slot in enumerate(old_slots + new_slots):
        into_order[slot] = j
    into_order_array = pa.array(into_order, pa.int64())
    mixed: list[dict[str, Any]] = [{} for _ in rows]
    mixed_before = set().union(*(rows[i].mixed for i in old_slots))
    arrays = {}
    for name in column_order(names):
        old = taken.column(name).combine_chunks() if taken is not None and name in taken.column_names else None
        new_values = [rows[i].get(name) for i in new_slots]

        def values_as_made() -> list:
            """The column's values as the row dicts held them (exact: see the module's docstring)."""
            values = [None] * len(rows)
            old_values = old.to_pylist() if old is not None else [None] * len(old_slots)
            for j, i in enumerate(old_slots):
                row = rows[i]
                values[i] = row.mixed[name] if name in row.mixed else (old_values[j] if name in row.keys else None)
            for j, i in enumerate(new_slots):
                values[i] = new_values[j]
            return values

        values = None
        array, is_mixed = fast_column(old, new_values, into_order_array, name in mixed_before)
        if array is None:
            values = values_as_made()
            array, is_mixed = column_array(values)
        if is_mixed:
            values = values if values is not None else values_as_made()
            for i, row in enumerate(rows):
                if name in (row.keys if isinstance(row, PreviousRow) else row):
                    mixed[i][name] = values[i]
        arrays[name] = array
    return Assembled(pa.table(arrays), mixed)


def fast_column(old: pa.Array | None, new_values: list, into_order: pa.Array, old_mixed: bool) -> tuple[pa.Array | None, bool]:
    """The column from the previous rows' Arrow values and the new rows' values, when their types
    combine without a look at each value: one Python type on both sides, or ints with floats.
    (None, False) otherwise."""
    if old_mixed:
        return None, False
    kinds = {type(v) for v in new_values if v is not None}
    if old is not None and old.null_count < len(old):
        old_kind = SINGLE_KINDS.get(old.type)
        if old_kind is None:
            return None, False
        kinds.add(old_kind)
    if len(kinds) > 1 and kinds != {int, float}:
        return None, False
    if not kinds:
        return pa.nulls(len(into_order)), False
    new, _ = column_array(new_values)
    if new.type != pa.null() and new.type not in SINGLE_KINDS:  # text for an integer beyond 64 bits
        return None, False
    target = pa.float64() if kinds == {int, float} else next(arrow for arrow, kind in SINGLE_KINDS.items() if kind in kinds)
    if new.type == pa.string() and target != pa.string():
        return None, False
    old = pa.nulls(len(into_order) - len(new), target) if old is None else pc.cast(old, target, safe=False)
    return pa.concat_arrays([old, pc.cast(new, target, safe=False)]).take(into_order), kinds == {int, float}
