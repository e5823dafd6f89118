"""A trial resumed from any of its checkpoints is the same trial: value for value, bit for bit on the CPU.

Each case runs `run_trial` once without interruption, then again from each checkpoint it wrote
(saved and loaded through the same functions as the Ray trainable), and compares every later report
exactly. Sensitivity checks show the comparison fails when a part of the restore is left out.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from raylab.training import checkpoint as resume
from raylab.training.loop import run_trial

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is many times faster on a shared machine


COPY = {
    "task": {"name": "copy", "delay": 4, "batch_size": 3, "eval_size": 6},
    "cell": {"name": "lstm"},
    "optimizer": {"name": "rmsprop", "lr": 1e-2},
    "training": {"steps": 6, "eval_every": 2},
    "hidden_size": 8,
    "seed": 3,
}
ADDING = {
    "task": {"name": "adding", "length": 12, "batch_size": 4, "eval_size": 8},
    "cell": {"name": "indrnn", "num_layers": 2, "dropout": 0.3, "timesteps": 12},  # dropout: the RNG must resume
    "optimizer": {"name": "adam", "lr": 1e-2},
    "training": {"steps": 6, "eval_every": 2},
    "hidden_size": 8,
    "seed": 1,
}
PSMNIST = {  # 4 batches an epoch, evaluations mid-epoch, a shuffled order, the best model on the test set
    "task": {"name": "mnist", "permute": True, "shuffle": True, "subset": 16, "batch_size": 4, "eval_batch_size": 8, "pixels_per_step": 28, "download": False},
    "cell": {"name": "rnn", "nonlinearity": "tanh"},
    "optimizer": {"name": "rmsprop", "lr": 1e-2},
    "training": {"steps": 6, "eval_every": 3},
    "hidden_size": 8,
    "seed": 0,
}
PTB_CHAR = {  # 10 windows an epoch: every checkpoint falls mid-epoch with a carried (h, c); plateau decay of the lr
    "task": {"name": "ptb", "level": "char", "bptt": 10, "batch_size": 4, "eval_batch_size": 4, "subset": 400, "embedding_size": 8},
    "cell": {"name": "lstm"},
    "optimizer": {"name": "rmsprop", "lr": 0.05, "lr_decay_on_plateau": 0.5},
    "training": {"steps": 8, "eval_every": 2},
    "hidden_size": 8,
    "seed": 0,
}
PTB_WORD = {  # IndRNN with frame-wise BN (its position travels in the carried state) and dropout
    "task": {"name": "ptb", "level": "word", "bptt": 10, "batch_size": 4, "eval_batch_size": 4, "subset": 400, "embedding_size": 8},
    "cell": {"name": "indrnn", "num_layers": 2, "batch_norm": "before", "batch_norm_stats": "frame", "frame_window": 10, "dropout": 0.2},
    "optimizer": {"name": "adam", "lr": 1e-2},
    "training": {"steps": 6, "eval_every": 2},
    "hidden_size": 8,
    "seed": 0,
}
SCHEDULED = {  # IndRNN's schedules: step decay, plateau drops reloading the best weights and optimizer state, the stop
    **ADDING,
    "optimizer": {"name": "adam", "lr": 1e-2, "lr_step_every": 3, "lr_step_factor": 0.5, "lr_decay_on_plateau": 0.5,
                  "reload_best_at_drop": "model_and_optimizer", "lr_stop_below": 1e-3},
    "training": {"steps": 40, "eval_every": 2},
}
CASES = {"copy": COPY, "adding": ADDING, "psmnist": PSMNIST, "ptb-char": PTB_CHAR, "ptb-word": PTB_WORD, "schedules": SCHEDULED}
NEEDS_DATA = ("psmnist", "ptb-char", "ptb-word")


def serialised(checkpoint: dict) -> bytes:
    buffer = io.BytesIO()
    resume.save_checkpoint(checkpoint, buffer)
    return buffer.getvalue()


def record(trial: dict, data_dir, restored: dict | None = None) -> list[tuple[dict, bytes | None]]:
    """Every report of one run, with its checkpoint as the bytes the trainable would write."""
    reports = []
    run_trial(trial, lambda metrics, checkpoint: reports.append((metrics, None if checkpoint is None else serialised(checkpoint))), restored, data_dir, CPU)
    return reports


def loaded(blob: bytes) -> dict:
    return resume.load_checkpoint(io.BytesIO(blob))


def last_checkpoint(reports: list[tuple[dict, bytes | None]]) -> bytes:
    return [blob for _, blob in reports if blob is not None][-1]


def assert_same_weights(a: bytes, b: bytes) -> None:
    model_a, model_b = loaded(a)["model"], loaded(b)["model"]
    assert model_a.keys() == model_b.keys()
    for name in model_a:
        assert torch.equal(model_a[name], model_b[name]), name


def assert_resumes_exactly(trial: dict, data_dir) -> list[tuple[dict, bytes | None]]:
    whole = record(trial, data_dir)
    checkpoints = [i for i, (_, blob) in enumerate(whole) if blob is not None]
    assert len(checkpoints) >= 2
    for i in checkpoints[:-1]:
        rest = record(trial, data_dir, loaded(whole[i][1]))
        assert [metrics for metrics, _ in rest] == [metrics for metrics, _ in whole[i + 1 :]], f"resumed from report {i}"
        assert_same_weights(last_checkpoint(rest), last_checkpoint(whole))
    return whole


@pytest.mark.parametrize("case", CASES)
def test_a_resumed_trial_equals_the_uninterrupted_one(case, request):
    data_dir = str(request.getfixturevalue("shared_data")) if case in NEEDS_DATA else None
    whole = assert_resumes_exactly(CASES[case], data_dir)
    assert all(math.isfinite(v) for metrics, _ in whole for k, v in metrics.items() if "/" in k)
    if CASES[case]["task"]["name"] in ("mnist", "ptb"):
        assert "test/loss" in whole[-1][0]  # the best-model copy was restored and evaluated


def test_the_last_evaluation_reports_the_final_splits_and_why_it_ended(shared_data):
    """One report at the budget holds validation and test metrics and `end`, so a scheduler that stops
    the trial on it cannot drop the test split; a restore from its checkpoint reports the same values."""
    whole = record(PSMNIST, str(shared_data))
    last, blob = whole[-1]
    assert last["step"] == 6 and last["end"] == "budget" and blob is not None
    assert {"val/loss", "val/acc", "test/loss", "test/acc"} <= set(last) and not any("test/loss" in m or "end" in m for m, _ in whole[:-1])
    again, = record(PSMNIST, str(shared_data), loaded(blob))  # e.g. the driver died before recording the last report
    assert again[1] is None and again[0]["end"] == "budget"
    assert {k: v for k, v in again[0].items() if k.split("/")[0] in ("val", "test")} == {k: v for k, v in last.items() if k.split("/")[0] in ("val", "test")}


def test_the_lr_schedule_is_exercised_and_resumes(shared_data):
    """PTB-char's plateau decay halves the lr in the uninterrupted run, before its last checkpoint."""
    whole = record(PTB_CHAR, str(shared_data))
    lrs = [loaded(blob)["optimizer"]["param_groups"][0]["lr"] for _, blob in whole if blob is not None]
    assert lrs[0] == 0.05 and min(lrs[:-1]) < 0.05, lrs


def test_the_step_schedule_drops_reloads_and_stops_before_its_budget():
    whole = record(SCHEDULED, None)
    schedules = [loaded(blob)["schedule"] for _, blob in whole if blob is not None]
    assert schedules[-1]["stopped"] and whole[-1][0]["step"] < 40 and schedules[0]["best_optimizer"] is not None


def rerun_without(trial: dict, data_dir, drop: str) -> tuple[list, list]:
    """(uninterrupted reports after the first checkpoint, reports resumed with one entry reset to a fresh trial's)."""
    whole = record(trial, data_dir)
    first = next(i for i, (_, blob) in enumerate(whole) if blob is not None)
    restored = loaded(whole[first][1])
    if drop == "rng":
        torch.manual_seed(trial["seed"])  # what a restore without RNG states continues from
        restored["rng"] = resume.rng_states(CPU)
    else:
        restored[drop] = None
    return [m for m, _ in whole[first + 1 :]], [m for m, _ in record(trial, data_dir, restored)]


def test_the_comparison_fails_without_the_carried_state(shared_data):
    for trial in (PTB_CHAR, PTB_WORD):
        expected, resumed = rerun_without(trial, str(shared_data), "carried_state")
        assert resumed != expected


def test_the_comparison_fails_without_the_rng_states():
    expected, resumed = rerun_without(ADDING, None, "rng")  # dropout masks restart from the seed
    assert resumed != expected


def cuda_tagged(checkpoint: dict, monkeypatch) -> bytes:
    """The checkpoint as a GPU trial writes it: every storage tagged `cuda:0` in the file."""
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        return serialised(checkpoint)


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a GPU checkpoint where no GPU exists")
def test_a_checkpoint_written_on_a_gpu_restores_on_the_cpu(monkeypatch):
    whole = record(ADDING, None)
    first = next(i for i, (_, blob) in enumerate(whole) if blob is not None)
    checkpoint = loaded(whole[first][1])
    checkpoint["rng"]["cuda"] = torch.get_rng_state()  # a GPU trial also saves its CUDA generator
    blob = cuda_tagged(checkpoint, monkeypatch)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(io.BytesIO(blob), weights_only=True)  # the file really holds CUDA storages
    restored = resume.load_checkpoint(io.BytesIO(blob))
    assert restored["rng"]["torch"].device == CPU and restored["model"]["readout.weight"].device == CPU
    rest = record(ADDING, None, restored)
    assert [m for m, _ in rest] == [m for m, _ in whole[first + 1 :]]


def test_carried_state_keeps_the_device_of_each_tensor():
    state = ((torch.randn(2, 3), torch.randn(2, 3)), torch.tensor(7))
    packed = resume.pack_carried_state(state)
    assert packed["devices"] == ["cpu", "cpu", "cpu"]
    packed["devices"] = ["meta", "meta", "cpu"]  # as if h and c lived on an accelerator, the BN position on the CPU
    (h, c), position = resume.unpack_carried_state(packed, torch.device("meta"))
    assert h.device.type == c.device.type == "meta" and position.device == CPU and int(position) == 7


def test_a_checkpoint_without_the_resume_entries_is_refused_in_one_line():
    whole = record(COPY, None)
    old = loaded(last_checkpoint(whole))
    del old["rng"], old["carried_state"]
    old["torch_rng"] = torch.get_rng_state()  # what raylab wrote before
    with pytest.raises(ValueError, match=r"^checkpoint has no rng, carried_state \(written by an older raylab\?\)"):
        record(COPY, None, old)
