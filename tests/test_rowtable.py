"""An incremental collect's table, assembled from the previous trials.parquet and new rows, is the
table a collect from scratch makes of the same rows (raylab/results/rowtable.py): same columns in
the same order, same types, same values, whatever mix of Python types the rows hold."""

from __future__ import annotations

import random

import pyarrow as pa

from raylab.results.rowtable import PreviousRow, arrow_table, assembled_table, column_order

KEYS = ("trial_id", "seed", "budget", "config.optimizer.lr", "config.task.delay", "final/val/loss", "best/val/acc", "version.torch", "extra")


def random_value(rng: random.Random):
    return rng.choice([None, rng.randint(-3, 3), rng.choice([0.5, 1.0, -2.25]), rng.choice(["a", "3", "1.0"]), rng.choice([True, False]), 2**70])


def random_row(rng: random.Random, index: int, kinds: dict[str, list]) -> dict:
    """A row with a random subset of the keys; each key draws from a few kinds, so that most columns
    keep one type and some mix."""
    row = {"trial_id": f"t{index}"}
    for key in KEYS[1:]:
        if rng.random() < 0.8:
            row[key] = rng.choice(kinds[key])
    return row


def test_assembled_tables_equal_tables_from_scratch_over_random_mixes():
    rng = random.Random(0)
    for case in range(300):
        pool = [random_value(rng) for _ in range(6)]
        kinds = {key: rng.sample(pool, rng.randint(1, 2)) for key in KEYS}  # one or two kinds per column
        rows = [random_row(rng, i, kinds) for i in range(rng.randint(1, 8))]
        # The previous collect kept some of these rows and others since dropped (a removed run).
        earlier = [row for row in rows if rng.random() < 0.6] + [random_row(rng, 100 + i, kinds) for i in range(rng.randint(0, 3))]
        rng.shuffle(earlier)
        previous = assembled_table(earlier, None)
        assert previous.table.equals(arrow_table(earlier)), case
        at = {row["trial_id"]: i for i, row in enumerate(earlier)}
        parts = [PreviousRow(at[row["trial_id"]], frozenset(row), previous.mixed[at[row["trial_id"]]]) if row["trial_id"] in at else row for row in rows]
        assembled = assembled_table(parts, previous.table)
        expected = arrow_table(rows)
        assert assembled.table.schema == expected.schema, (case, assembled.table.schema, expected.schema)
        assert assembled.table.equals(expected), (case, assembled.table.to_pylist(), expected.to_pylist())
        # What it keeps for the next collect: the values of each mixed column, as the rows held them.
        again = assembled_table(parts, previous.table)
        assert again.mixed == assembled.mixed


def test_the_column_order_does_not_depend_on_the_rows():
    rows = [{"final/val/loss": 1.0, "config.cell.name": "rnn", "trial_id": "a", "version.torch": "2"}, {"zz": 1, "run": "r", "trial_id": "b"}]
    table = arrow_table(rows)
    assert table.column_names == ["trial_id", "run", "version.torch", "config.cell.name", "final/val/loss", "zz"]
    assert arrow_table(rows[::-1]).column_names == table.column_names == column_order(reversed(table.column_names))


def test_a_column_of_ints_and_floats_is_floats_and_its_values_are_kept_as_they_were():
    rows = [{"trial_id": "a", "x": 3}, {"trial_id": "b", "x": 0.5}]
    assembled = assembled_table(rows, None)
    assert assembled.table.column("x").type == pa.float64()
    assert assembled.mixed == [{"x": 3}, {"x": 0.5}]
    # The float's run removed: the int alone is an int again, as a collect from scratch would make it.
    alone = assembled_table([PreviousRow(0, frozenset(rows[0]), assembled.mixed[0])], assembled.table)
    assert alone.table.equals(arrow_table(rows[:1])) and alone.table.column("x").type == pa.int64()
