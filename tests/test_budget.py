"""Parameter counts (nnRNN §9, IndRNN §1.7) and the hidden-size solver behind `budget:`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raylab.networks.budget import model_counter, solve_hidden_size
from raylab.spec.config import ConfigError, parse_sweep
from raylab.networks.model import SequenceModel, build_cell, build_model, check_cell_spec, count_parameters, on_meta_device
from raylab.planning.trials import resolve_trials
from raylab.tasks import TASKS

COPY = TASKS["copy"](onehot=True)  # n_in 10, n_out 9
PSMNIST = TASKS["mnist"](permute=True)  # n_in 1, n_out 10
PTB = TASKS["ptb"](level="char")  # embedding 200, vocabulary 50; no data is read before setup()


def count(task, cell: dict, hidden_size: int) -> int:
    with on_meta_device():
        return count_parameters(build_model(task, check_cell_spec(cell), hidden_size))


# nnRNN §9: "exact effective counts", the seeds' parameter-matched sizes.
SECTION_9 = [
    (COPY, "nnrnn", 128, 18_953),
    (COPY, "exprnn", 176, 18_929),
    (COPY, "lstm", 63, 19_224),
    (COPY, "rnn", 128, 19_081),
    (COPY, "exprnn", 128, 10_697),
    (PSMNIST, "nnrnn", 512, 268_298),
    (PSMNIST, "exprnn", 722, 268_955),
    (PSMNIST, "lstm", 257, 268_832),
    (PSMNIST, "rnn", 512, 268_810),
    (PSMNIST, "exprnn", 512, 136_970),
    (PTB, "nnrnn", 1024, 1_315_650),
    (PTB, "exprnn", 1386, 1_317_741),
    (PTB, "lstm", 475, 1_318_200),
    (PTB, "rnn", 1024, 1_316_674),
]


@pytest.mark.parametrize("task, cell, hidden_size, expected", SECTION_9, ids=[f"{t.__class__.__name__}-{c}-{n}" for t, c, n, _ in SECTION_9])
def test_section_9_counts(task, cell, hidden_size, expected):
    assert count(task, {"name": cell}, hidden_size) == expected
    assert count(task, {"name": "rnn_orth"}, hidden_size) == count(task, {"name": "rnn"}, hidden_size)


CELL_SPECS = [
    {"name": "rnn"}, {"name": "rnn_orth"}, {"name": "eurnn"}, {"name": "exprnn"}, {"name": "nnrnn"}, {"name": "lstm"},
    {"name": "indrnn", "num_layers": 2, "input_init": "normal"}, {"name": "indrnn", "architecture": "residual", "num_layers": 3},
]


@pytest.mark.parametrize("cell", CELL_SPECS, ids=["-".join(map(str, c.values())) for c in CELL_SPECS])
def test_counts_are_the_same_on_cpu_and_meta(cell):
    built = count_parameters(build_model(COPY, check_cell_spec(cell), 16))
    assert built == count(COPY, cell, 16)


def test_meta_builds_skip_random_fills_only_on_meta_tensors():
    with on_meta_device():
        model = build_model(COPY, check_cell_spec({"name": "lstm"}), 8)
        on_cpu = torch.zeros(3, device="cpu").normal_()
    assert all(p.is_meta for p in model.parameters())
    assert bool((on_cpu != 0).all())  # a real tensor is still filled


def test_validation_does_not_import_torch_dynamo():
    """Random fills of meta tensors would import torch._dynamo (1-2 s of every `raylab run`)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, glob\n"
        "from raylab.planning.sweep import load_sweep\n"
        "for path in sorted(glob.glob('jobs/*.yaml')): load_sweep(path)\n"
        "assert 'torch._dynamo' not in sys.modules, 'validation imported torch._dynamo'\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_nnrnn_paper_mask_has_n_over_2_fewer_parameters():
    assert count(COPY, {"name": "nnrnn", "t_mask": "paper"}, 128) == 18_953 - 64


# IndRNN §1.7, BN gamma/beta counted, running statistics not; readout Linear(N, classes).
INDRNN = [
    (1, 10, 128, {"num_layers": 6}, 86_410),
    (1, 10, 128, {"num_layers": 12}, 187_786),
    (1, 10, 128, {"architecture": "residual", "num_layers": 5}, 170_890),
    (1, 10, 84, {"architecture": "dense"}, 256_514),
    (150, 60, 512, {"num_layers": 6}, 1_430_588),
    (150, 60, 512, {"architecture": "residual", "num_layers": 5}, 2_751_548),
]


@pytest.mark.parametrize("n_in, n_out, hidden_size, options, expected", INDRNN)
def test_indrnn_counts(n_in, n_out, hidden_size, options, expected):
    with torch.device("meta"):
        cell = build_cell(check_cell_spec({"name": "indrnn", "batch_norm": "after", **options}), n_in, hidden_size)
        model = SequenceModel(nn.Identity(), cell, nn.Linear(hidden_size, n_out), "last")
    assert count_parameters(model) == expected


@pytest.mark.parametrize("cell, expected", [("nnrnn", 512), ("exprnn", 722), ("lstm", 257), ("rnn", 512)])
def test_solver_reproduces_psmnist_sizes(cell, expected):
    """The supplement's 269K budget: the largest N within it is the size the seeds used."""
    assert solve_hidden_size(model_counter(PSMNIST, check_cell_spec({"name": cell})), 269_000) == expected


@pytest.mark.parametrize("task, cell, hidden_size, n_params", SECTION_9[:5])
def test_solver_inverts_exact_counts(task, cell, hidden_size, n_params):
    """At a budget equal to a §9 count the solver returns that size. (The copy rows cannot all come
    from one budget: the original code's LSTM formula counted the readout four times.)"""
    counter = model_counter(task, check_cell_spec({"name": cell}))
    assert solve_hidden_size(counter, n_params) == hidden_size
    assert solve_hidden_size(counter, n_params - 1) < hidden_size


def test_solver_rounding_and_constraints():
    squares = lambda n: n * n  # noqa: E731
    assert solve_hidden_size(squares, 110) == 10
    assert solve_hidden_size(squares, 110, "nearest") == 10
    assert solve_hidden_size(squares, 116, "nearest") == 11
    even_only = lambda n: n * n if n % 2 == 0 else None  # noqa: E731
    assert solve_hidden_size(even_only, 143) == 10 and solve_hidden_size(even_only, 144) == 12
    powers = lambda n: n if n & (n - 1) == 0 else None  # noqa: E731
    assert solve_hidden_size(powers, 1000) == 512 and solve_hidden_size(powers, 1000, "nearest") == 1024
    with pytest.raises(ConfigError, match="too small"):
        solve_hidden_size(squares, 0)


SWEEP = {
    "name": "budget",
    "task": {"name": "copy", "delay": 5},
    "variants": [{"cell": {"name": "nnrnn"}}, {"cell": {"name": "lstm"}}, {"cell": {"name": "exprnn"}}],
    "seeds": [0],
    "training": {"steps": 2},
    "budget": {"n_params": [2000, 5000]},
}


def test_sweep_budget_resolves_per_variant():
    trials = resolve_trials(parse_sweep(SWEEP))
    assert len(trials) == 6
    for trial in trials:
        assert trial["budget"] in (2000, 5000) and trial["n_params"] <= trial["budget"]
        bigger = trial["hidden_size"] + (2 if trial["cell"]["name"] == "nnrnn" else 1)
        assert count(COPY, trial["cell"], bigger) > trial["budget"]
    assert [t["hidden_size"] for t in trials if t["cell"]["name"] == "nnrnn"][0] % 2 == 0


def test_sweep_hidden_sizes_have_no_budget():
    data = {**SWEEP, "hidden_sizes": [8]}
    del data["budget"]
    assert {t["budget"] for t in resolve_trials(parse_sweep(data))} == {None}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_sizes": [8]}, "exactly one of hidden_sizes or budget"),
        ({"budget": None}, "exactly one of hidden_sizes or budget"),
        ({"budget": {"n_params": -3}}, "budget.n_params: must be positive"),
        ({"budget": {"n_params": 5000, "rounding": "up"}}, "one of floor|nearest"),
        ({"budget": {"n_params": 10}}, "variants[0].cell: budget n_params=10: too small"),
    ],
)
def test_budget_errors_are_one_line(change, message):
    with pytest.raises(ConfigError) as error:
        resolve_trials(parse_sweep({**SWEEP, **change}))
    assert message in str(error.value) and "\n" not in str(error.value)
