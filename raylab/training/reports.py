"""Every report of a trial, kept in each of its checkpoints: the record that survives a driver lost mid-sync.

With storage in a bucket, Tune uploads a trial's result.json from the driver, in the same background
sync, file by file, as the experiment state that names the trial's latest checkpoint. A driver killed
during that upload can leave a state that names checkpoint k beside a result.json that ends before
k: the trial restored from k continues after it, and the reports in between are missing from
result.json for good (a killed driver with an S3 bucket, tests/test_s3_storage.py). The trial itself
uploads each checkpoint folder before Tune records it, so a copy of the reports inside that folder is
always as new as the checkpoint a restore starts from; `collect` fills such gaps from it.

`lineage` names one chain of attempts: a trial started without a checkpoint draws a new one, a trial
restored from a checkpoint carries that checkpoint's on. Every report carries it, so `collect` tells
the last chain's rows from an earlier chain's and fills gaps only from a checkpoint of the same chain.
Torch-free: `results` reads it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

REPORTS_FILE = "reports.json"  # in each checkpoint folder, beside the model state
LINEAGE_KEY = "lineage"


def new_lineage() -> str:
    return uuid.uuid4().hex[:12]


def write_reports(directory: str | Path, lineage: str, reports: list[dict]) -> None:
    Path(directory, REPORTS_FILE).write_text(json.dumps({LINEAGE_KEY: lineage, "reports": reports}))


def read_reports(directory: str | Path) -> tuple[str | None, list[dict]]:
    """(lineage, reports) of a local checkpoint folder; (None, []) for one written before this record, or unreadable."""
    try:
        return parse_reports(Path(directory, REPORTS_FILE).read_bytes())
    except OSError:
        return None, []


def parse_reports(content: bytes | str) -> tuple[str | None, list[dict]]:
    """(lineage, reports) of a REPORTS_FILE's content, wherever it was read from; (None, []) if unreadable."""
    try:
        record = json.loads(content)
        return str(record[LINEAGE_KEY]), list(record["reports"])
    except (ValueError, KeyError, TypeError):
        return None, []
