"""raylab: sweeps of long-memory recurrent networks (nnRNN, IndRNN papers) on Ray Tune.

The package is layered; each layer may import only the layers above it in this list
(docs/architecture.md, held by tests/test_layering.py):

    spec        the sweep-file language: YAML, dataclasses, type checks, overrides, the registry
    cells       recurrent cells (one per file) and tasks: data, models' inputs and outputs, metrics
    tasks
    networks    the model around a cell, parameter budgets, optimizer groups, lr schedules
    training    the training loop, checkpoints, process state, metric directions (no Ray)
    planning    a sweep file resolved into trials: grid and search axes, identity, pre-flight checks
    results     Parquet collection, tables, comparisons, promotion, figures, provenance
    execution   the Ray layer: Ray start-up, the Tuner, the trainable, search, re-runs, live output, Jobs
    cli         the `raylab` command

This facade exports the Python loaders of docs/python.md.
"""

from raylab.results.provenance import RAYLAB_VERSION as __version__

__all__ = ["__version__", "load_curves", "load_trials"]  # results in pandas (docs/python.md)


def __getattr__(name: str):  # noqa: ANN202
    if name in ("load_curves", "load_trials"):
        # Imported on first use: `import raylab` (in every Ray worker) does not load pandas and pyarrow.
        from raylab.results import aggregate

        return getattr(aggregate, name)
    raise AttributeError(f"module 'raylab' has no attribute {name!r}")
