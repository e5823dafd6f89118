"""Shared fixtures. Ray tests start a real embedded Ray with explicit CPUs and shut it down after."""

import pytest


def embedded_ray(num_cpus: int):
    import ray

    ray.init(address="local", num_cpus=num_cpus, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_2_cpus():
    """A real local Ray with 2 CPUs for the tests of one module."""
    yield from embedded_ray(2)


@pytest.fixture(scope="module")
def ray_1_cpu():
    """One CPU: trials run one at a time in Tune's order (reproducible scheduler decisions)."""
    yield from embedded_ray(1)


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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread, like a 1-CPU trial: tiny matrices are slower with more on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
