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
OTHER_ENGINE = next(engine for engine in torch.backends.quantized.supported_engines if engine not in (torch.backends.quantized.engine, "none"))
DIRTY = {
    "default_dtype": torch.float64,
    "default_device": torch.device("meta"),
    "grad_enabled": False,
    "anomaly_detection": (True, False),
    "deterministic_algorithms": (True, True),
    "autograd_multithreading": False,
    "deterministic_fill_uninitialized_memory": False,
    "cuda.preferred_linalg_library": "magma",  # the solver behind matrix_exp and eigh (expRNN, nnRNN)
    "cuda.preferred_blas_library": "cublaslt",
    "cuda.flash_sdp": False,
    "cuda.mem_efficient_sdp": False,
    "cuda.math_sdp": False,
    "cuda.cudnn_sdp": False,
    "cuda.math_sdp_fp16_bf16_reduction": True,
    "mha_fastpath": False,
    "nnpack": False,
    "warn_always": True,
    "sparse_invariants": True,
    "numpy_errors": {"divide": "raise", "over": "raise", "under": "raise", "invalid": "raise"},
    **{
        f"backends.{path}": (not FRESH_SETTINGS[f"backends.{path}"]) if path.endswith(("enabled", "benchmark", "deterministic", "reduction", "accumulation"))
        else OTHER_ENGINE if path == "quantized.engine"
        else ("optimal" if FRESH_SETTINGS[f"backends.{path}"] != "optimal" else "greedy") if path == "opt_einsum.strategy"
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


def test_reset_puts_the_environment_back_as_the_first_trial_found_it(monkeypatch):
    import os

    import raylab.training.process_state as process_state

    monkeypatch.setattr(process_state, "FRESH_ENVIRONMENT", None)
    monkeypatch.setenv("RAYLAB_TEST_KEPT", "fresh")
    monkeypatch.delenv("RAYLAB_TEST_ADDED", raising=False)
    assert "environ.RAYLAB_TEST_KEPT" not in reset_process_state(torch.get_num_threads())  # the first trial: the snapshot
    os.environ["RAYLAB_TEST_KEPT"] = "changed by a trial"
    os.environ["RAYLAB_TEST_ADDED"] = "left by a trial"
    changed = reset_process_state(torch.get_num_threads())
    assert {"environ.RAYLAB_TEST_KEPT", "environ.RAYLAB_TEST_ADDED"} <= set(changed)
    assert os.environ["RAYLAB_TEST_KEPT"] == "fresh" and "RAYLAB_TEST_ADDED" not in os.environ
    del os.environ["RAYLAB_TEST_KEPT"]  # a trial may remove a variable too
    assert "environ.RAYLAB_TEST_KEPT" in reset_process_state(torch.get_num_threads())
    assert os.environ["RAYLAB_TEST_KEPT"] == "fresh"


# A user cell that keeps state in its module: the first trial of a process fills the cache and every
# later trial in that process reads the first one's values (issue 18, item 10).
CACHED_CELL = '''
import torch
from torch import nn

CACHE = {}


class CachedRNN(nn.Module):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.rnn = nn.RNN(input_size, hidden_size, batch_first=True)
        self.offset = CACHE.setdefault(hidden_size, torch.randn(hidden_size))  # drawn by the first trial only

    def forward(self, inputs, state=None):
        outputs, state = self.rnn(inputs, state)
        return outputs + self.offset.to(outputs.device), state
'''

# One trial of a run's manifest in a process of its own (no validation first: it would build the cell
# on the meta device and so fill the cache itself).
ALONE = """
import json, sys
from raylab.training.loop import run_trial
rows = []
trial = next(t for t in json.load(open(sys.argv[1]))["trials"] if t["seed"] == int(sys.argv[2]))
run_trial(trial, lambda metrics, state: rows.append(metrics))
print(json.dumps(rows))
"""


@pytest.mark.ray
def test_a_user_cell_with_a_module_level_cache_gives_each_trial_its_curve_alone(tmp_path):
    (tmp_path / "cachecell.py").write_text(CACHED_CELL)
    sweep = {
        "name": "cached", "task": {"name": "copy", "delay": 5, "batch_size": 4, "eval_size": 8},
        "variants": [{"cell": {"name": "cachecell:CachedRNN"}}], "hidden_sizes": [8], "seeds": [0, 1],
        "training": {"steps": 4, "eval_every": 2}, "storage": str(tmp_path / "results"),
    }
    (tmp_path / "cached.yaml").write_text(yaml.safe_dump(sweep))
    driver = subprocess.run([sys.executable, "-m", "raylab.cli", "run", "cached.yaml", "--num-cpus", "1"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert driver.returncode == 0, driver.stdout + driver.stderr
    reported = {}
    for path in (tmp_path / "results" / "cached").glob("run-*/*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        reported[rows[0]["config"]["trial"]["seed"]] = rows
    assert sorted(reported) == [0, 1]
    [manifest] = (tmp_path / "results" / "cached").glob("run-*/raylab.json")
    for seed, rows in reported.items():
        alone = subprocess.run([sys.executable, "-c", ALONE, str(manifest), str(seed)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert alone.returncode == 0, alone.stderr
        expected = json.loads(alone.stdout.strip().splitlines()[-1])
        assert [{k: v for k, v in row.items() if k in expected[i]} for i, row in enumerate(rows)] == expected, f"seed {seed}"
