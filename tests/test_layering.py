"""Cells, tasks, the training loop and the benchmarks import without Ray (GPU machines may lack it)."""

import subprocess
import sys
from pathlib import Path

BLOCK_RAY = """
import sys
class BlockRay:
    def find_spec(self, name, path, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("Ray is not installed here")
sys.meta_path.insert(0, BlockRay())
"""


def test_core_modules_and_benchmarks_import_without_ray():
    root = Path(__file__).resolve().parents[1]
    code = BLOCK_RAY + """
import runpy
import raylab.cells, raylab.tasks, raylab.training, raylab.sweep, raylab.budget, raylab.aggregate
sys.argv = ["cells.py", "--help"]
try:
    runpy.run_path("benchmarks/cells.py", run_name="__main__")
except SystemExit as done:
    assert done.code == 0
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
