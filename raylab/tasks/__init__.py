"""Tasks, one per file, registered by name in `TASKS`."""

from raylab.tasks.adding import AddingTask
from raylab.tasks.copying import CopyTask
from raylab.tasks.protocol import Batch, Task

# Sweep files name tasks by these keys; `raylab ls tasks` lists them with their options.
TASKS = {
    "copy": CopyTask,
    "adding": AddingTask,
}

__all__ = ["TASKS", "AddingTask", "Batch", "CopyTask", "Task"]
