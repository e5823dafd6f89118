"""Sweep-file validation: every bad input is one line naming the file and the key, exit code 2."""

from pathlib import Path

import pytest
import yaml

from raylab.cli import main
from raylab.spec.config import ConfigError
from raylab.planning.sweep import load_sweep
from raylab.planning.trials import config_hash

GOOD = {
    "name": "tiny",
    "task": {"name": "copy", "delay": 5},
    "variants": [{"cell": {"name": "rnn", "nonlinearity": "tanh"}}, {"cell": {"name": "lstm"}, "optimizer": {"lr": 0.01}}],
    "hidden_sizes": [8, 16],
    "seeds": [0, 1, 2],
    "optimizer": {"name": "rmsprop", "lr": 0.001, "alpha": 0.9},
    "training": {"steps": 10, "eval_every": 5},
}


def write(tmp_path: Path, data: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def with_change(key_path: str, value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    node = data
    keys = key_path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[keys[-1]]
    elif isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return data


DELETE = object()


def test_good_file_resolves_the_full_grid(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD))
    assert len(sweep.trials) == 2 * 2 * 3  # variants x hidden sizes x seeds
    lstm = [t for t in sweep.trials if t["cell"]["name"] == "lstm"]
    assert {t["optimizer"]["lr"] for t in lstm} == {0.01}  # the variant's override
    assert {t["optimizer"]["alpha"] for t in lstm} == {0.9}  # the rest from the sweep
    assert len({t["config_hash"] for t in sweep.trials}) == 12
    assert all(t["n_params"] > 0 for t in sweep.trials)


@pytest.mark.parametrize(
    "key_path, value, expected",
    [
        ("optimizer.lrr", 0.1, "optimizer: unknown key 'lrr' (valid keys: name, lr,"),
        ("bogus", 1, "unknown key 'bogus'"),
        ("variants.0.cell.name", "gru9", "variants[0].cell.name: unknown name 'gru9' (valid names: rnn, rnn_orth, "),
        ("task.name", "copyy", "task.name: unknown name 'copyy' (valid names: copy, adding, "),
        ("variants.0.cell.nonlinearity", "sigmoid", "variants[0].cell.nonlinearity: 'sigmoid' is not one of tanh|relu|modrelu"),
        ("variants.0.cell.hidden_size", 4, "variants[0].cell.hidden_size: unknown option for 'rnn'"),
        ("hidden_sizes", [8, 0], "hidden_sizes[1]: must be positive, got 0"),
        ("hidden_sizes", [8, "big"], "hidden_sizes[1]: expected int, got 'big' (str)"),
        ("training.steps", -5, "training.steps: must be positive, got -5"),
        ("training.steps", 2.5, "training.steps: expected int, got 2.5 (float)"),
        ("optimizer.name", "sgd", "optimizer.name: 'sgd' is not one of rmsprop|adam"),
        ("optimizer.alpha", 1.5, "optimizer.alpha: must be in [0, 1)"),
        ("variants.1.optimizer.lr", -1, "variants[1].optimizer.lr: must be positive"),
        ("task.delay", 0, "task: copy: delay must be positive, got 0"),
        ("seeds", [], "seeds: must list at least one seed"),
        ("name", DELETE, "name: required key is missing"),
        ("resources.gpu", -1, "resources.gpu: must be non-negative"),
        ("training.epochs", 3, "training: set exactly one of steps or epochs"),
    ],
)
def test_bad_files_fail_with_one_line_naming_file_and_key(tmp_path, capsys, key_path, value, expected):
    if key_path == "resources.gpu":
        data = {**GOOD, "resources": {"gpu": value}}
    else:
        data = with_change(key_path, value)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        load_sweep(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message

    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"raylab: error: {message}"


def test_missing_file_and_broken_yaml(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such sweep file" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ntask: {name: copy\n")
    assert main(["validate", str(broken)]) == 2
    assert f"{broken}: not valid YAML (line" in capsys.readouterr().err


def test_run_with_a_bad_file_starts_nothing_and_writes_nothing(tmp_path, capsys):
    data = with_change("variants.0.cell.name", "nope")
    data["storage"] = str(tmp_path / "results")
    path = write(tmp_path, data)
    assert main(["run", str(path)]) == 2
    assert not (tmp_path / "results").exists()
    import ray

    assert not ray.is_initialized()


def test_overrides_are_typed_and_validated(tmp_path):
    path = write(tmp_path, GOOD)
    sweep = load_sweep(path, ["training.steps=20", "seeds=[5]", "variants.0.cell.nonlinearity=relu", "optimizer.lr=1e-4"])
    assert {t["training"]["steps"] for t in sweep.trials} == {20}
    assert {t["seed"] for t in sweep.trials} == {5}
    assert sweep.trials[0]["cell"]["name"] == "rnn" and sweep.trials[0]["cell"]["nonlinearity"] == "relu"  # + defaults written out
    assert sweep.trials[0]["optimizer"]["lr"] == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match=r"sweep.yaml: training.steps: expected int, got 'many'"):
        load_sweep(path, ["training.steps=many"])
    with pytest.raises(ConfigError, match=r"override 'training.steps': expected key.sub=value"):
        load_sweep(path, ["training.steps"])
    with pytest.raises(ConfigError, match=r"variants.7: no list item '7'"):
        load_sweep(path, ["variants.7.cell.name=rnn"])


def test_a_seed_range_is_the_list_of_its_seeds(tmp_path):
    """`seeds: {range: [start, stop]}` is Python's half-open range: the same trials, the same hashes."""
    listed = load_sweep(write(tmp_path, {**GOOD, "seeds": [3, 4, 5, 6]}))
    ranged = load_sweep(write(tmp_path, {**GOOD, "seeds": {"range": [3, 7]}}))
    assert ranged.spec.seeds == [3, 4, 5, 6]
    assert [config_hash(t) for t in ranged.trials] == [config_hash(t) for t in listed.trials]
    many = load_sweep(write(tmp_path, GOOD), ["seeds={range: [0, 500]}"])
    assert len(many.trials) == 2 * 2 * 500 and sorted({t["seed"] for t in many.trials}) == list(range(500))


def test_a_huge_bad_override_is_echoed_short(tmp_path, capsys):
    """A 500-seed override with one bad value, or a 5,000-character value: one short line, exit 2."""
    path = write(tmp_path, GOOD)
    assert main(["validate", str(path), "seeds=[" + ",".join(map(str, range(499))) + ",x]"]) == 2
    assert main(["validate", str(path), "variants.0.cell.nonlinearity=" + "x" * 5000]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(len(line) < 300 for line in errors), errors
    assert "seeds[499]: expected int, got 'x' (str)" in errors[0] and "(5002 characters) is not one of tanh" in errors[1]


def test_config_hash_ignores_the_label_but_not_the_hyperparameters(tmp_path):
    base = load_sweep(write(tmp_path, GOOD)).trials[0]
    relabelled = {**base, "variant": "renamed"}
    assert config_hash(relabelled) == base["config_hash"]
    changed = {**base, "optimizer": {**base["optimizer"], "lr": 0.5}}
    assert config_hash(changed) != base["config_hash"]


def test_smoke_mode_keeps_one_seed_and_a_few_steps(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD), smoke=True)
    assert {t["seed"] for t in sweep.trials} == {0}
    assert all(t["training"]["steps"] <= 10 for t in sweep.trials)


def test_shipped_smoke_job_validates():
    sweep = load_sweep(Path(__file__).resolve().parents[1] / "jobs" / "smoke.yaml")
    assert len({t["variant"] for t in sweep.trials}) >= 2 and len({t["seed"] for t in sweep.trials}) >= 2


def test_a_variant_can_have_its_own_hidden_sizes(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["variants"][1]["hidden_sizes"] = [64]
    sweep = load_sweep(write(tmp_path, data))
    sizes = {(t["variant"], t["hidden_size"]) for t in sweep.trials}
    assert sizes == {("rnn", 8), ("rnn", 16), ("lstm", 64)}
    data["variants"][1]["hidden_sizes"] = [0]
    with pytest.raises(ConfigError, match=r"variants\[1\].hidden_sizes\[0\]: must be positive"):
        load_sweep(write(tmp_path, data))
