"""Recurrent cells, one per file, registered by name in `CELLS`."""

from raylab.cells.lstm import LSTM
from raylab.cells.protocol import RecurrentCell
from raylab.cells.rnn import RNN

# Sweep files name cells by these keys; `raylab ls cells` lists them with their options.
CELLS = {
    "rnn": RNN,
    "lstm": LSTM,
}

# Constructor arguments that raylab supplies (from the task and the sweep's hidden sizes).
INJECTED_CELL_ARGS = ("input_size", "hidden_size")

__all__ = ["CELLS", "INJECTED_CELL_ARGS", "LSTM", "RNN", "RecurrentCell"]
