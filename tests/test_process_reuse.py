"""Trials that reuse a worker process (reuse_actors) compute exactly what they compute in a fresh one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from raylab.training.process_state import BACKEND_FLAGS, FRESH_SETTINGS, SETTINGS, read_settings, reset_process_state

# A value other than PyTorch's default for every reset setting: what a careless trial might leave.
DIRTY = {
    "default_dtype": torch.float64,
    "default_device": torch.device("meta"),
    "grad_enabled": False,
    "anomaly_detection": (True, False),
    "deterministic_algorithms": (True, True),
    "autograd_multithreading": False,
    "numpy_errors": {"divide": "raise", "over": "raise", "under": "raise", "invalid": "raise"},
    **{
        f"backends.{path}": (not FRESH_SETTINGS[f"backends.{path}"]) if path.endswith(("enabled", "benchmark", "deterministic", "reduction"))
        else ("ieee" if FRESH_SETTINGS[f"backends.{path}"] != "ieee" else "tf32")
        for path in BACKEND_FLAGS
    },
}
# ... and the legacy switches a trial might still use, which write the flags above.
LEGACY = {"allow_tf32": lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", True), "matmul_precision": lambda: torch.set_float32_matmul_precision("medium")}

# One tiny trial per task, each in a worker process that ran the others before it.
TASK_SPECS = [
    {"name": "copy", "delay": 5, "batch_size": 4, "eval_size": 8},
    {"name": "adding", "length": 10, "batch_size": 4, "eval_size": 8},
    {"name": "mnist", "subset": 16, "batch_size": 4, "eval_batch_size": 8, "pixels_per_step": 28, "download": False},
    {"name": "ptb", "level": "char", "subset": 1000, "batch_size": 4, "eval_batch_size": 10, "bptt": 20, "embedding_size": 16},
]

# Runs the sweep's trials with the trainable's reset in one process and prints their curves;
# argv: sweep file, data dir, "dirty" (every setting changed and a warm-up trial first) or "fresh".
RUN_TRIALS = """
import json, sys
import torch
from raylab.training.process_state import reset_process_state
from raylab.planning.sweep import load_sweep
from raylab.training.loop import run_trial
sys.path.insert(0, "tests")
from test_process_reuse import DIRTY, LEGACY, SETTINGS

sweep_file, data_dir, mode, *names = sys.argv[1:]
trials = [t for t in load_sweep(sweep_file).trials if not names or t["task"]["name"] in names]
if mode == "dirty":
    run_trial({**trials[-1], "seed": 7}, lambda metrics, state: None, data_dir=data_dir)  # moves every RNG, fills caches
    for set_legacy in LEGACY.values():
        set_legacy()
    for name, value in DIRTY.items():
        SETTINGS[name][1](value)
    torch.set_num_threads(2)
curves = {}
for trial in trials:
    reset_process_state(1)
    rows = []
    run_trial(trial, lambda metrics, state: rows.append(metrics), data_dir=data_dir)
    curves[trial["task"]["name"]] = rows
print(json.dumps(curves))
"""


def test_reset_puts_every_setting_back():
    assert set(DIRTY) == set(SETTINGS), "give every reset setting a value to dirty it with"
    try:
        for set_legacy in LEGACY.values():
            set_legacy()
        for name, value in DIRTY.items():
            SETTINGS[name][1](value)
        assert [name for name in SETTINGS if read_settings()[name] == FRESH_SETTINGS[name]] == []
        torch.set_num_threads(2)
        changed = reset_process_state(num_threads=1)
    finally:
        reset_process_state(num_threads=torch.get_num_threads())
    assert sorted(changed) == sorted(SETTINGS)
    assert read_settings() == FRESH_SETTINGS and torch.get_num_threads() == 1


def write_sweep(tmp_path: Path) -> Path:
    sweep = {
        "name": "reuse",
        "task": TASK_SPECS,
        "variants": [{"cell": {"name": "lstm"}, "label": "LSTM"}],
        "hidden_sizes": [8],
        "seeds": [3],
        "training": {"steps": 4, "eval_every": 2},
        "storage": str(tmp_path / "results"),
    }
    path = tmp_path / "reuse.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def run_trials(sweep_file: Path, data_dir: Path, mode: str, *names: str) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen([sys.executable, "-c", RUN_TRIALS, str(sweep_file), str(data_dir), mode, *names], cwd=root, stdout=subprocess.PIPE, text=True)


def curves_of(process: subprocess.Popen) -> dict:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fresh_curves(tmp_path_factory, shared_data):
    """Each task's curves from a process of its own that ran nothing before it."""
    sweep_file = write_sweep(tmp_path_factory.mktemp("fresh"))
    processes = [run_trials(sweep_file, shared_data, "fresh", spec["name"]) for spec in TASK_SPECS]
    curves = {}
    for process in processes:
        curves.update(curves_of(process))
    assert sorted(curves) == sorted(spec["name"] for spec in TASK_SPECS)
    return curves


@pytest.mark.slow
def test_a_dirtied_process_after_the_reset_gives_the_fresh_curves_bit_for_bit(tmp_path, shared_data, fresh_curves):
    reused = curves_of(run_trials(write_sweep(tmp_path), shared_data, "dirty"))
    assert reused == fresh_curves  # exact floats: JSON keeps every bit of a double


@pytest.mark.ray
@pytest.mark.slow
def test_trials_in_a_reused_ray_worker_give_the_fresh_curves_bit_for_bit(tmp_path, shared_data, fresh_curves):
    sweep_file = write_sweep(tmp_path)
    driver = subprocess.run(
        [sys.executable, "-m", "raylab.cli", "run", str(sweep_file), "--num-cpus", "1", "--data-dir", str(shared_data)],
        capture_output=True, text=True, timeout=300,
    )
    assert driver.returncode == 0, driver.stdout + driver.stderr
    results = {}
    for path in (tmp_path / "results" / "reuse").glob("run-*/*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        results[rows[0]["config"]["trial"]["task"]["name"]] = rows
    assert sorted(results) == sorted(fresh_curves)
    assert len({row["pid"] for rows in results.values() for row in rows}) == 1  # one worker ran every trial
    for task, rows in results.items():
        reported = [{k: v for k, v in row.items() if k in fresh_curves[task][i]} for i, row in enumerate(rows)]
        assert reported == fresh_curves[task], task
