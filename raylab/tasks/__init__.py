"""Tasks, one per file, registered by name in `TASKS`; the contract in `protocol`, data files and
their checksums in `data`. A layer of its own: it imports torch and nothing else from raylab.
"""

from raylab.tasks.adding import AddingTask
from raylab.tasks.copying import CopyTask
from raylab.tasks.mnist import MNISTTask
from raylab.tasks.protocol import Batch, Task
from raylab.tasks.ptb import PTBTask

# Sweep files name tasks by these keys; `raylab ls tasks` lists them with their options.
TASKS = {
    "copy": CopyTask,
    "adding": AddingTask,
    "mnist": MNISTTask,
    "ptb": PTBTask,
}

__all__ = ["TASKS", "AddingTask", "Batch", "CopyTask", "MNISTTask", "PTBTask", "Task"]
