"""raylab: sweeps of long-memory recurrent networks (nnRNN, IndRNN papers) on Ray Tune.

Cells (`raylab.cells`), tasks (`raylab.tasks`) and the training loop (`raylab.training`) import
without Ray; `raylab.runner` and `raylab.trainable` are the Ray layer.
"""

__version__ = "0.1.0"
__all__ = ["load_curves", "load_trials"]  # results in pandas (docs/python.md)


def __getattr__(name: str):  # noqa: ANN202
    # Lazy, so that `import raylab` (in every Ray worker) does not load pandas and pyarrow.
    if name in __all__:
        from raylab import aggregate

        return getattr(aggregate, name)
    raise AttributeError(f"module 'raylab' has no attribute {name!r}")
