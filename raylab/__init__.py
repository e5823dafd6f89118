"""raylab: sweeps of long-memory recurrent networks (nnRNN, IndRNN papers) on Ray Tune.

Cells (`raylab.cells`), tasks (`raylab.tasks`) and the training loop (`raylab.training`) import
without Ray; `raylab.runner` and `raylab.trainable` are the Ray layer.
"""

__version__ = "0.1.0"
