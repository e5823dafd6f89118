"""Keep Ray's routine console messages away from the user; raylab prints its own lines instead.

Each message dropped here is one that raylab replaces or makes moot, matched by the logger that
emits it and a fragment of its text, so any other Ray warning (a real failure) still gets through.
Pure `logging`: importing this module does not import Ray.
"""

from __future__ import annotations

import logging

# (logger name, text fragment): why raylab drops it.
ROUTINE_MESSAGES = (
    # Printed on every local start; raylab's embedded Ray is local and token auth is Ray's default.
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled for this Ray cluster"),
    # Trials that never reported (not started yet, or interrupted) have no result.json; raylab's
    # table counts them as pending/unfinished instead.
    ("ray.tune.analysis.experiment_analysis", "Failed to fetch metrics"),
    # Tune's Ctrl-C messages name `Tuner.restore(...)`; raylab's answer is `raylab run` again or `raylab resume`.
    ("ray.tune.tune", "Stop signal received"),
    ("ray.tune.tune", "has been interrupted, but the most recent state was saved"),
    # `loggers: [mlflow]`: MLflow makes its SQLite tables on a sweep's first run; raylab prints where the store is.
    ("mlflow.store.db.utils", "Creating initial MLflow database tables"),
    ("mlflow.store.db.utils", "Updating database tables"),
)


class DropRoutine(logging.Filter):
    """Drops records whose message contains one of `fragments`."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_ray_logs() -> None:
    """Install the filters (idempotent: a logger gets at most one raylab filter)."""
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, fragment in ROUTINE_MESSAGES:
        by_logger[name] = (*by_logger.get(name, ()), fragment)
    for name, fragments in by_logger.items():
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, DropRoutine)]
        logger.addFilter(DropRoutine(fragments))
