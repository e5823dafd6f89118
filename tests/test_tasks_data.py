"""MNIST and PTB tasks on the shared data: checksums, splits, vocabularies, metrics, carried state."""

import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from raylab.tasks.data import DataError
from raylab.tasks.mnist import MNISTTask, permutation_and_split
from raylab.tasks.ptb import TOKENS, VOCAB_SIZE, PTBTask, batchify, load_corpus, tokenize, window

CPU = torch.device("cpu")


# --- data files ---------------------------------------------------------------------------------


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"ptb-char/train.txt: missing data file .*RAYLAB_DATA"):
        PTBTask(data_dir=str(tmp_path)).setup(CPU, None)
    with pytest.raises(DataError, match=r"MNIST/raw/.*: missing data file"):
        MNISTTask(data_dir=str(tmp_path), download=False).setup(CPU, None)


def test_corrupt_file_fails_its_checksum(tmp_path, shared_data):
    for split in ("train", "valid", "test"):
        (tmp_path / "ptb-word").mkdir(exist_ok=True)
        shutil.copy(shared_data / "ptb-word" / f"{split}.txt", tmp_path / "ptb-word" / f"{split}.txt")
    with (tmp_path / "ptb-word" / "valid.txt").open("a") as handle:
        handle.write(" extra \n")
    with pytest.raises(DataError, match=r"ptb-word/valid.txt: sha256 \w+\.\.\. does not match the expected c9fe6985fe0d4ccb"):
        PTBTask(level="word", data_dir=str(tmp_path)).setup(CPU, None)


def test_task_option_overrides_the_runtime_data_dir(tmp_path, shared_data):
    task = PTBTask(level="word", subset=500, data_dir=str(shared_data))
    task.setup(CPU, str(tmp_path))  # the empty runtime folder is not used
    assert task._data["train"].numel() == 500 // task.batch_size * task.batch_size


# --- MNIST --------------------------------------------------------------------------------------


def test_permutation_and_split_come_from_one_fixed_stream():
    order, train, val = permutation_and_split()
    rng = np.random.RandomState(1234)
    assert np.array_equal(order, rng.permutation(784))
    assert np.array_equal(np.concatenate([train, val]), rng.permutation(60000))
    assert len(train) == 50000 and len(val) == 10000
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(60000))
    again = permutation_and_split()
    assert all(np.array_equal(a, b) for a, b in zip((order, train, val), again))


@pytest.fixture(scope="module")
def mnist(shared_data):
    task = MNISTTask(batch_size=100)
    task.setup(CPU, str(shared_data))
    return task


def test_mnist_splits_sizes_pixels_and_labels(mnist, shared_data):
    assert {s: len(mnist._labels[s]) for s in ("train", "val", "test")} == {"train": 50000, "val": 10000, "test": 10000}
    assert mnist.steps_per_epoch == 500
    counts = torch.bincount(torch.cat([mnist._labels["train"], mnist._labels["val"]]), minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # shared/data README
    batch = mnist.train_batch(0, seed=3)
    assert batch.inputs.shape == (100, 784, 1) and batch.inputs.dtype == torch.float32
    assert batch.inputs.min() >= 0.0 and batch.inputs.max() <= 1.0 and batch.inputs.max() == 1.0
    plain = MNISTTask(permute=False, subset=100)
    plain.setup(CPU, str(shared_data))
    order, train_idx, _ = permutation_and_split()
    assert torch.equal(plain._images["train"][:, order], mnist._images["train"][:100])  # same images, permuted pixels
    assert torch.equal(plain._labels["train"], mnist._labels["train"][:100])


def test_mnist_batches_ignore_the_trial_seed_unless_shuffled(mnist, shared_data):
    assert torch.equal(mnist.train_batch(7, seed=0).inputs, mnist.train_batch(7, seed=1).inputs)
    assert torch.equal(mnist.train_batch(7, seed=0).inputs, mnist.train_batch(507, seed=0).inputs)  # same order each epoch
    shuffled = MNISTTask(shuffle=True, subset=200, batch_size=50)
    shuffled.setup(CPU, str(shared_data))
    assert torch.equal(shuffled.train_batch(1, 5).targets, shuffled.train_batch(1, 5).targets)
    assert not torch.equal(shuffled.train_batch(1, 5).targets, shuffled.train_batch(5, 5).targets)  # a new epoch, a new order


def test_mnist_rows_of_pixels_make_shorter_sequences(shared_data):
    rows = MNISTTask(permute=False, pixels_per_step=28, subset=4)
    rows.setup(CPU, str(shared_data))
    assert rows.input_size == 28 and rows.train_batch(0, 0).inputs.shape == (4, 28, 28)
    with pytest.raises(ValueError, match="pixels_per_step must divide 784"):
        MNISTTask(pixels_per_step=5)


def test_mnist_centered_pixels_follow_the_indrnn_code(shared_data):
    task = MNISTTask(pixels="centered", subset=10)
    task.setup(CPU, str(shared_data))
    values = task.train_batch(0, 0).inputs
    assert values.min() == -1.0 and values.max() <= 255 / 128 - 1


# --- PTB ----------------------------------------------------------------------------------------


def test_tokenize_appends_eos_per_line_like_a_line_loop():
    assert tokenize("a b\nc\n") == ["a", "b", "<eos>", "c", "<eos>"]
    assert tokenize(" a _ b \n ") == ["a", "_", "b", "<eos>", "<eos>"]  # the lone space line of ptb-char


@pytest.mark.parametrize("level", ["char", "word"])
def test_ptb_vocabulary_and_token_counts(level, shared_data):
    vocabulary, ids = load_corpus(str(shared_data), level)
    assert len(vocabulary) == VOCAB_SIZE[level] and "<eos>" in vocabulary
    assert {split: len(ids[split]) for split in ids} == TOKENS[level]
    if level == "char":
        assert set(vocabulary) - {"<eos>"} == set("#$&'*-./0123456789<>N\\_abcdefghijklmnopqrstuvwxyz")
        assert TOKENS["char"]["train"] == 5_017_482 + 1  # README count + the final lone-space line
    else:
        assert TOKENS["word"]["train"] == 929_589


def test_batchify_and_windows():
    data = batchify(torch.arange(23), 4)  # (4, 5): rows are contiguous chunks, 3 tokens dropped
    assert data.tolist()[1] == [5, 6, 7, 8, 9]
    inputs, targets = window(data, 0, 3)
    assert inputs.shape == targets.shape == (4, 3) and torch.equal(targets, inputs + 1)
    inputs, targets = window(data, 3, 3)  # the last window is shorter: 5 - 1 - 3 = 1
    assert inputs.tolist() == [[3], [8], [13], [18]] and targets.tolist() == [[4], [9], [14], [19]]


def test_ptb_windows_follow_each_other_and_reset_each_epoch(shared_data):
    task = PTBTask(bptt=50, batch_size=4, subset=1000)
    task.setup(CPU, str(shared_data))
    assert task.steps_per_epoch == math.ceil((250 - 1) / 50) == 5
    batches = [task.train_batch(step, seed=0) for step in range(7)]
    assert [b.reset_state for b in batches] == [True, False, False, False, False, True, False]
    for previous, current in zip(batches[:4], batches[1:5]):
        assert torch.equal(current.inputs[:, 0], previous.targets[:, -1])  # the stream continues per row
    assert torch.equal(batches[5].inputs, batches[0].inputs)


class UniformModel(nn.Module):
    """Equal logits for every symbol, and a state that counts the windows it has seen."""

    def __init__(self, vocabulary: int) -> None:
        super().__init__()
        self.vocabulary, self.states_seen = vocabulary, []

    def forward(self, inputs, state=None):
        self.states_seen.append(state)
        return torch.zeros(*inputs.shape, self.vocabulary), (0 if state is None else state + 1)


def test_bpc_is_nats_over_ln2_and_the_state_is_carried_in_evaluation(shared_data):
    task = PTBTask(bptt=40, subset=1000, eval_batch_size=5)
    task.setup(CPU, str(shared_data))
    model = UniformModel(50)
    metrics = task.evaluate(model, "val")
    assert metrics["loss"] == pytest.approx(math.log(50))
    assert metrics["bpc"] == pytest.approx(math.log2(50))  # 5.6439 bits: no information
    assert model.states_seen == [None, 0, 1, 2, 3]  # 200 columns -> 5 windows, one state carried through
    assert 0 <= metrics["acc"] <= 1
    word = PTBTask(level="word", subset=500, eval_batch_size=5)
    word.setup(CPU, str(shared_data))
    assert word.evaluate(UniformModel(10000), "test")["ppl"] == pytest.approx(10000, rel=1e-4)


def test_accuracy_counts_top1_next_symbols():
    task = PTBTask(subset=1000)
    targets = torch.tensor([[1, 2, 3, 4]])
    logits = torch.nn.functional.one_hot(torch.tensor([[1, 2, 0, 0]]), 50).float()
    metrics = task.batch_metrics(logits, targets)
    assert metrics["acc"] == 0.5
    assert metrics["bpc"] == pytest.approx(task.loss(logits, targets).item() / math.log(2))


def test_tied_weights_share_the_embedding():
    from raylab.networks.model import build_model

    task = PTBTask(level="word", embedding_size=16, tie_weights=True, subset=1000)
    model = build_model(task, {"name": "lstm"}, 16)
    assert model.readout.weight is model.encoder.weight
    with pytest.raises(ValueError, match="tie_weights needs hidden size = embedding_size"):
        build_model(PTBTask(level="word", embedding_size=16, tie_weights=True, subset=1000), {"name": "lstm"}, 32)
