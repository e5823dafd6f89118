"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def shared_data():
    """The read-only data folder (MNIST, PTB): $RAYLAB_DATA, else ../shared/data beside the repository.

    Skipped where it is absent, except in CI (`CI` set), where a missing folder is a failure.
    """
    import os
    from pathlib import Path

    path = Path(os.environ.get("RAYLAB_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (path / "SHA256SUMS").is_file():
        message = f"no data folder at {path} (set RAYLAB_DATA, or put shared/ beside the repository)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
