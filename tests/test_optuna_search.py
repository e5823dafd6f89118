"""`search.algorithm: optuna` (one Optuna study per slot) and `search.seeds_per_sample` (a sample
judged on the mean of several seeds): validation, the searcher's bookkeeping, and real embedded Ray
runs, interrupted and resumed (docs/research.md)."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState
from ray.tune.search import Searcher

from raylab.cli import main
from raylab.execution.search import SlotSearcher, studies
from raylab.planning.sweep import load_sweep

BASE = {
    "name": "tpe",
    "task": {"name": "copy", "delay": 5, "eval_size": 20},
    "variants": [{"cell": {"name": "rnn", "nonlinearity": "tanh"}, "label": "RNN"}, {"cell": {"name": "lstm"}, "label": "LSTM"}],
    "hidden_sizes": [8],
    "seeds": [0],
    "training": {"steps": 10, "eval_every": 5},
}
SPACE = {"optimizer.lr": {"loguniform": [1.0e-4, 1.0e-1]}}
OPTUNA = {"algorithm": "optuna", "num_samples": 4, "space": SPACE, "sampler": {"name": "tpe", "n_startup_trials": 2}}


def write(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**BASE, "storage": str(tmp_path / "results"), **changes}))
    return path


@pytest.mark.parametrize("search, message", [
    ({**OPTUNA, "algorithm": "random"}, "search.sampler: only applies to algorithm: optuna (the algorithm is random)"),
    ({"space": SPACE, "max_concurrent": 2}, "search.max_concurrent: only applies to algorithm: optuna"),
    ({**OPTUNA, "max_concurrent": 0}, "search.max_concurrent: must be positive"),
    ({**OPTUNA, "sampler": {"name": "hyperband"}}, "search.sampler.name: 'hyperband' is not one of tpe, random, qmc"),
    ({**OPTUNA, "sampler": {"name": "tpe", "n_startup": 3}}, "search.sampler.n_startup: not an option of the tpe sampler (options: "),
    ({**OPTUNA, "sampler": {"name": "tpe", "seed": 3}}, "search.sampler.seed: raylab seeds each slot's study"),
    ({**OPTUNA, "sampler": {"name": "tpe", "n_startup_trials": 2.5}}, "search.sampler.n_startup_trials: expected int (default 10), got 2.5"),
    ({**OPTUNA, "sampler": {"name": "tpe", "multivariate": "yes"}}, "search.sampler.multivariate: expected"),
    ({**OPTUNA, "sampler": {"name": "tpe", "gamma": 0.1}}, "search.sampler.gamma: not an option of the tpe sampler"),  # a Python callable
    ({**OPTUNA, "sampler": {"name": "qmc", "qmc_type": "lattice"}}, "search.sampler: the qmc sampler refuses these options"),
    ({**OPTUNA, "space": {"cell.nonlinearity": {"choice": [{"a": 1}, "tanh"]}}}, "search.space.cell.nonlinearity"),
    ({**OPTUNA, "seeds_per_sample": 0}, "search.seeds_per_sample: must be positive"),
    ({**OPTUNA, "seeds_per_sample": 2, "scheduler": {"grace_period": 5}},
     "search.seeds_per_sample: 2 with a scheduler: ASHA would stop each seed on its own value, not on the sample's mean"),
])
def test_bad_optuna_and_seeds_per_sample_settings_are_one_line_errors(tmp_path, capsys, search, message):
    assert main(["validate", str(write(tmp_path, search=search))]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "sweep.yaml" in err, err


def test_a_missing_optuna_is_one_line_naming_the_extra(tmp_path):
    block = ("import sys\nclass Block:\n    def find_spec(self, name, path, target=None):\n"
             "        if name.split('.')[0] == 'optuna': raise ImportError('not installed')\n"
             "sys.meta_path.insert(0, Block())\nfrom raylab.cli import main\nsys.exit(main(['validate', sys.argv[1]]))")
    result = subprocess.run([sys.executable, "-c", block, str(write(tmp_path, search=OPTUNA))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "search.algorithm: optuna needs the optuna package: pip install -e '.[optuna]'" in result.stderr, result.stderr


def test_seeds_past_the_seed_limit_and_several_sweep_seeds_are_refused(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, seeds=[2**32 - 2], search={**OPTUNA, "seeds_per_sample": 3}))]) == 2
    assert "search.seeds_per_sample: seeds 4294967294..4294967296 pass 2**32 - 1" in capsys.readouterr().err
    assert main(["validate", str(write(tmp_path, seeds=[0, 1], search={**OPTUNA, "seeds_per_sample": 3}))]) == 2
    assert "seeds: a search draws its samples from one seed, got 2; train each sample on several with search.seeds_per_sample" in capsys.readouterr().err


def test_tpe_that_never_leaves_its_random_start_is_said(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, search={**OPTUNA, "sampler": None}))]) == 0
    err = capsys.readouterr().err
    assert "search.sampler.n_startup_trials: TPE draws its first 10 samples at random and num_samples is 4, so this search is random search" in err


@pytest.mark.parametrize("example", sorted(p.name for p in (Path(__file__).resolve().parents[1] / "examples").glob("copy-*.yaml")))
def test_the_search_examples_validate(example, capsys):
    assert main(["validate", str(Path(__file__).resolve().parents[1] / "examples" / example)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_optuna_with_tasks_of_different_primary_metrics_names_its_metric(tmp_path, capsys):
    tasks = [{"name": "copy", "delay": 5}, {"name": "mnist", "subset": 16}]
    assert main(["validate", str(write(tmp_path, task=tasks, search=OPTUNA))]) == 2
    assert "search.metric: the sweep's tasks have different primary metrics; name the one to optimize" in capsys.readouterr().err


def test_a_space_with_fewer_combinations_than_samples_is_said(tmp_path, capsys):
    search = {**OPTUNA, "space": {"cell.nonlinearity": {"choice": ["tanh", "relu"]}, "optimizer.lr": {"choice": [1.0e-3, 1.0e-2]}}}
    assert main(["validate", str(write(tmp_path, search=search, variants=BASE["variants"][:1]))]) == 0
    assert "search.num_samples: 4 samples of a space with 4 combination(s)" not in capsys.readouterr().err
    search["num_samples"] = 5
    assert main(["validate", str(write(tmp_path, search=search, variants=BASE["variants"][:1]))]) == 0
    assert "search.num_samples: 5 samples of a space with 4 combination(s): some draws repeat an earlier one" in capsys.readouterr().err


def identity(tmp_path: Path, search: dict) -> dict:
    return load_sweep(write(tmp_path, search=search)).trials[0]["search"]


def test_identity_resolves_the_sampler_and_records_what_changes_the_draws(tmp_path):
    written_default = identity(tmp_path, {**OPTUNA, "sampler": {"name": "tpe", "n_startup_trials": 2, "n_ei_candidates": 24}})
    assert identity(tmp_path, OPTUNA) == written_default  # a default written out is the same search
    assert written_default["sampler"]["n_startup_trials"] == 2 and written_default["max_concurrent"] == 4
    assert written_default["metric"] == "val/loss" and written_default["mode"] == "min"
    assert identity(tmp_path, {**OPTUNA, "max_concurrent": 2}) != written_default
    assert "seeds_per_sample" not in written_default
    assert identity(tmp_path, {**OPTUNA, "seeds_per_sample": 3})["seeds_per_sample"] == 3
    # random search on one seed keeps the identity it had before optuna existed (finished searches stay finished)
    assert set(identity(tmp_path, {"space": SPACE})) == {"space", "num_samples", "algorithm", "scheduler"}
    three = load_sweep(write(tmp_path, search={"space": SPACE, "seeds_per_sample": 3})).trials
    one = load_sweep(write(tmp_path, search={"space": SPACE})).trials
    assert {t["config_hash"] for t in three}.isdisjoint(t["config_hash"] for t in one)


def searcher(tmp_path: Path, **search) -> SlotSearcher:
    sweep = load_sweep(write(tmp_path, search={**OPTUNA, **search}))
    return SlotSearcher(sweep.spec.search, sweep.trials, sweep.spec.seeds[0], "val/loss", "min")


def end(searcher: SlotSearcher, trial_id: str, value: float | None, end: str = "budget", error: bool = False) -> None:
    if value is not None:
        searcher.on_trial_result(trial_id, {"val/loss": value, "step": 10})
    searcher.on_trial_complete(trial_id, {"report_format": 2, "end": end, "step": 10}, error=error)


def test_each_slot_bounds_what_is_in_flight_and_hands_out_a_samples_seeds_together(tmp_path):
    slot_searcher = searcher(tmp_path, seeds_per_sample=2, max_concurrent=2)
    configs = {}
    while (config := slot_searcher.suggest(f"t{len(configs)}")) is not None:
        configs[f"t{len(configs)}"] = config
    # 2 slots x 2 samples in flight x 2 seeds; then the bound holds every slot
    assert len(configs) == 8 and slot_searcher.suggest("t-extra") is None
    firsts = list(configs.values())
    assert [c["sample_seed"] for c in firsts] == [0, 1] * 4
    assert firsts[0]["sample"] == firsts[1]["sample"] and firsts[0]["trial"] is firsts[1]["trial"]  # one sample, two seeds
    assert firsts[0]["trial"]["variant"] == "RNN" and firsts[2]["trial"]["variant"] == "LSTM"  # slots take turns

    end(slot_searcher, "t0", 1.0)
    assert slot_searcher.suggest("t8") is None  # one seed of a sample ended: nothing is told yet, the bound still holds
    end(slot_searcher, "t1", 3.0)
    new = slot_searcher.suggest("t8")
    assert new is not None and new["trial"]["variant"] == "RNN" and new["sample_seed"] == 0
    study = slot_searcher.slots[0].study
    told = study.trials[0]
    assert told.state == TrialState.COMPLETE and told.value == 2.0  # the mean over the sample's seeds
    assert told.user_attrs["seed_values"] == {"0": 1.0, "1": 3.0}


def test_a_diverged_seed_prunes_its_sample_and_an_errored_one_fails_it(tmp_path):
    slot_searcher = searcher(tmp_path, seeds_per_sample=2)
    ids = [f"t{i}" for i in range(4)]
    for trial_id in ids:
        slot_searcher.suggest(trial_id)
    end(slot_searcher, "t0", 1.0)
    end(slot_searcher, "t1", None, end="diverged")
    end(slot_searcher, "t2", 1.0)
    end(slot_searcher, "t3", None, error=True)
    states = [t.state for t in slot_searcher.slots[0].study.trials] + [t.state for t in slot_searcher.slots[1].study.trials]
    assert states == [TrialState.PRUNED, TrialState.FAIL]
    assert slot_searcher.slots[0].study.trials[0].user_attrs["seed_statuses"] == {"0": "finished", "1": "diverged"}


def test_the_searcher_restored_from_its_state_draws_no_sample_twice_and_ends(tmp_path):
    first = searcher(tmp_path, max_concurrent=1)
    assert first.suggest("a")["trial"]["variant"] == "RNN"
    end(first, "a", 1.0)
    in_flight = first.suggest("b")
    assert in_flight["trial"]["variant"] == "LSTM"  # slots take turns
    first.save(str(tmp_path / "state.pkl"))

    restored = searcher(tmp_path, max_concurrent=1)
    restored.restore(str(tmp_path / "state.pkl"))
    end(restored, "b", 0.5)  # a trial in flight at the save ends after the restore: it is told to its study
    lstm = restored.slots[1].study
    assert lstm.trials[0].state == TrialState.COMPLETE and lstm.trials[0].params == in_flight["sample"]
    handed = 2
    while (config := restored.suggest(f"c{handed}")) not in (None, Searcher.FINISHED):
        end(restored, f"c{handed}", 1.0)
        handed += 1
    assert config == Searcher.FINISHED and handed == 2 * 4
    for slot in restored.slots:
        assert [t.state for t in slot.study.trials] == [TrialState.COMPLETE] * 4


def test_the_same_sweep_file_draws_the_same_samples_and_slots_draw_apart(tmp_path):
    one, two = searcher(tmp_path), searcher(tmp_path)
    draws = [[s.suggest(str(i))["sample"] for i in range(4)] for s in (one, two)]
    assert draws[0] == draws[1]
    assert draws[0][0] != draws[0][1]  # the RNN's first draw and the LSTM's first draw


@pytest.mark.ray
def test_optuna_search_on_two_seeds_per_sample_runs_tells_means_and_promotes(ray_1_cpu, tmp_path, capsys):
    sweep_file = write(tmp_path, search={**OPTUNA, "seeds_per_sample": 2, "max_concurrent": 2})
    assert main(["run", str(sweep_file)]) == 0
    sweep_dir = tmp_path / "results" / "tpe"
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 2 * 4 * 2 and set(trials["status"]) == {"finished"}
    per_sample = trials.groupby(["variant", "config.optimizer.lr"])["seed"].apply(sorted)
    assert len(per_sample) == 8 and all(seeds == [0, 1] for seeds in per_sample), per_sample
    assert trials["search_base"].nunique() == 2

    run_dir = next(sweep_dir.glob("run-*"))
    for base, study in studies(run_dir).items():
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
        rows = trials[trials["search_base"] == base]
        for told in study.trials:
            sample = rows[rows["config.optimizer.lr"] == told.params["optimizer.lr"]]
            assert len(sample) == 2 and math.isclose(told.value, sample["final/val/loss"].mean(), rel_tol=1e-6)

    capsys.readouterr()
    assert main(["table", str(sweep_dir), "--metric", "val/loss"]) == 0
    table = capsys.readouterr().out
    assert table.count("(n=2)") == 8, table  # a sample's seeds are one configuration

    best_file = tmp_path / "best.yaml"
    assert main(["best", str(sweep_dir), "--seeds", "3", "--out", str(best_file)]) == 0
    out = capsys.readouterr().out
    assert "(n=2)" in out and "runner-up" in out
    promoted = yaml.safe_load(best_file.read_text())
    assert promoted["seeds"] == [2, 3, 4] and "search" not in promoted  # fresh seeds: past the samples' 0 and 1

    assert main(["run", str(sweep_file)]) == 0  # a finished search is not searched again
    assert "already finished" in capsys.readouterr().out
    assert len(list(sweep_dir.glob("run-*"))) == 1


@pytest.mark.ray
def test_random_search_on_seeds_and_optuna_with_asha(ray_1_cpu, tmp_path):
    sweep_file = write(tmp_path, variants=BASE["variants"][:1], search={"space": SPACE, "num_samples": 2, "seeds_per_sample": 3})
    assert main(["run", str(sweep_file)]) == 0
    trials = pd.read_parquet(tmp_path / "results" / "tpe" / "trials.parquet")
    assert len(trials) == 6 and trials.groupby("config.optimizer.lr")["seed"].apply(sorted).tolist() == [[0, 1, 2]] * 2

    asha = {**OPTUNA, "num_samples": 5, "max_concurrent": 1, "space": {"optimizer.lr": {"loguniform": [1.0e-4, 0.3]}},
            "scheduler": {"grace_period": 2, "reduction_factor": 2}}
    sweep_file = write(tmp_path, name="tpe-asha", variants=BASE["variants"][:1], training={"steps": 8, "eval_every": 2}, search=asha)
    assert main(["run", str(sweep_file)]) == 0
    sweep_dir = tmp_path / "results" / "tpe-asha"
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 5 and "stopped" in set(trials["status"]), trials[["status", "steps"]]
    (study,) = studies(next(sweep_dir.glob("run-*"))).values()
    states = {t.params["optimizer.lr"]: t.state for t in study.trials}
    for _, row in trials.iterrows():  # a sample ASHA stopped is told as pruned, with the values it reported
        assert states[row["config.optimizer.lr"]] == (TrialState.PRUNED if row["status"] == "stopped" else TrialState.COMPLETE)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert all(t.intermediate_values for t in pruned)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("again", ["resume", "run"])
def test_an_interrupted_optuna_search_continues_each_study(ray_1_cpu, tmp_path, again):
    """Killed mid-search, continued by `raylab resume` or by the same `raylab run`: every study ends with
    exactly num_samples samples, none drawn twice, every sample on its k seeds, in the same run folder."""
    from test_faults import SLOW_COPY, raylab, result_rows, wait_for

    search = {**OPTUNA, "num_samples": 3, "seeds_per_sample": 2, "max_concurrent": 1}
    sweep_file = write(tmp_path, task=SLOW_COPY, hidden_sizes=[64], training={"steps": 6, "eval_every": 2}, search=search)
    sweep_dir = tmp_path / "results" / "tpe"
    driver = raylab("run", str(sweep_file), "--num-cpus", "1")
    wait_for(lambda: len(result_rows(sweep_dir)) >= 4 and any(sweep_dir.glob("run-*/searcher-state-*.pkl")), 300, "four trials and a saved searcher", driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)

    if again == "resume":
        assert main(["resume", str(sweep_dir), "--num-cpus", "1"]) == 0
    else:
        assert main(["run", str(sweep_file), "--num-cpus", "1"]) == 0
    (run_dir,) = sweep_dir.glob("run-*")
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 2 * 3 * 2 and set(trials["status"]) == {"finished"}, trials[["variant", "seed", "status"]]
    assert trials.groupby(["variant", "config.optimizer.lr"])["seed"].apply(sorted).tolist() == [[0, 1]] * 6
    for study in studies(run_dir).values():
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
        assert len({t.params["optimizer.lr"] for t in study.trials}) == 3
