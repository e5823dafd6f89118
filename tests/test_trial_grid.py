"""raylab's grid generator makes the trials Tune's BasicVariantGenerator makes, in the same order,
with the same draws for a search (raylab/execution/trial_grid.py). Its speed is measured by
benchmarks/sweep_scale.py, not here."""

from __future__ import annotations

import pytest
from ray import tune
from ray.tune.experiment import Experiment
from ray.tune.search.basic_variant import BasicVariantGenerator

from raylab.execution.trial_grid import TrialGridGenerator

pytestmark = pytest.mark.ray


def trials_of(generator, param_space: dict, num_samples: int) -> list[tuple[dict, str]]:
    generator.add_configurations([Experiment("grid", run=lambda config: None, config=param_space, num_samples=num_samples)])
    made = []
    while (trial := generator.next_trial()) is not None:
        made.append((trial.config, trial.trial_id.rsplit("_", 1)[-1]))
    return made


def grid(n: int) -> list[dict]:
    return [{"variant": "RNN" if i % 2 else "LSTM", "seed": i, "cell": {"name": "rnn", "betas": [0.9, 0.999]}, "config_hash": f"{i:016x}"} for i in range(n)]


@pytest.mark.parametrize("searched", [False, True], ids=["grid", "search"])
def test_the_same_trials_as_tunes_generator(searched):
    space = {"trial": tune.grid_search(grid(7)), "runtime": {"data_dir": None}}
    samples = 1
    if searched:
        space["sample"] = {"optimizer.lr": tune.loguniform(1e-4, 1e-2), "cell.width": tune.choice([8, 16, 32])}
        samples = 3
    ours = trials_of(TrialGridGenerator(random_state=5), space, samples)
    tunes = trials_of(BasicVariantGenerator(random_state=5), space, samples)
    assert len(ours) == 7 * samples
    assert ours == tunes

