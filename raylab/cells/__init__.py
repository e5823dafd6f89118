"""Recurrent cells, one per file, registered by name in `CELLS`; the contract in `protocol`, shared
math in `functional`, `orthogonal` and `recurrence`, and per-parameter optimizer settings as tags
(`tags`). A layer of its own: it imports torch and nothing else from raylab.
"""

from raylab.cells.eurnn import EURNN
from raylab.cells.exprnn import ExpRNN
from raylab.cells.gru import GRU
from raylab.cells.indrnn import IndRNN
from raylab.cells.lstm import LSTM
from raylab.cells.nnrnn import NNRNN
from raylab.cells.protocol import RecurrentCell
from raylab.cells.rnn import RNN, RNNOrth

# Sweep files name cells by these keys; `raylab ls cells` lists them with their options.
CELLS = {
    "rnn": RNN,
    "rnn_orth": RNNOrth,
    "exprnn": ExpRNN,
    "nnrnn": NNRNN,
    "eurnn": EURNN,
    "lstm": LSTM,
    "gru": GRU,
    "indrnn": IndRNN,
}

# Constructor arguments that raylab supplies (from the task and the sweep's hidden sizes).
INJECTED_CELL_ARGS = ("input_size", "hidden_size")

__all__ = ["CELLS", "EURNN", "GRU", "INJECTED_CELL_ARGS", "LSTM", "NNRNN", "RNN", "ExpRNN", "IndRNN", "RNNOrth", "RecurrentCell"]
