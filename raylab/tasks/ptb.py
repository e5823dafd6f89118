"""Penn Treebank language modelling, characters or words (nnRNN reference §6.3, IndRNN §3.3-3.4).

The protocol is the one of awd-lstm-lm, which the nnRNN code derives from:
- tokens: each line split on whitespace plus `<eos>`; the dictionary is built over train, valid and
  test in order of first appearance (50 symbols for characters, 10,000 words);
- `batchify`: the token stream is cut to a multiple of the batch size and laid out as B parallel
  rows (batch-first here: row b is the b-th contiguous chunk);
- truncated BPTT: windows start at 0, bptt, 2 bptt, ...; targets are the inputs shifted by one;
  the hidden state is carried (detached) across the windows of an epoch and reset at its start, and
  at the start of every evaluation pass.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raylab.tasks.data import DataError, checked_file, data_root, file_version
from raylab.tasks.protocol import Batch

Level = Literal["char", "word"]
SPLITS = ("train", "valid", "test")
EOS = "<eos>"
# Known sizes of the checksummed files (raylab.tasks.data.SHA256), so that a sweep file is validated and
# its models counted without reading the data. Tokens include one <eos> per line, and, like
# awd-lstm-lm's line loop, one for the lone space that ends each character-level file.
TOKENS = {
    "char": {"train": 5_017_483, "valid": 393_043, "test": 442_424},
    "word": {"train": 929_589, "valid": 73_760, "test": 82_430},
}
VOCAB_SIZE = {"char": 50, "word": 10_000}
FOLDER = {"char": "ptb-char", "word": "ptb-word"}
SPLIT_NAME = {"val": "valid", "test": "test"}  # metric prefixes -> file names


def tokenize(text: str) -> list[str]:
    """`line.split() + ['<eos>']` for every line, as awd-lstm-lm reads a file line by line."""
    if not text.endswith("\n"):
        text += "\n"  # a last line without a newline still ends with <eos>
    return text.replace("\n", f" {EOS} ").split()


def load_corpus(root: str, level: Level) -> tuple[tuple[str, ...], dict[str, Tensor]]:
    """(vocabulary, {split: int64 token ids}) of one level, read once per process and file version
    (trials that reuse a worker process share it while the checksummed files stay the same)."""
    hint = "set the task's data_dir, `raylab run --data-dir` or RAYLAB_DATA to a folder with ptb-char/ and ptb-word/ (see shared/data/README.md)"
    files = tuple(file_version(checked_file(Path(root), f"{FOLDER[level]}/{split}.txt", hint)) for split in SPLITS)
    return _read_corpus(files)


@lru_cache(maxsize=2)
def _read_corpus(files: tuple[tuple[str, int, int], ...]) -> tuple[tuple[str, ...], dict[str, Tensor]]:
    tokens = {split: tokenize(Path(path).read_text()) for split, (path, _, _) in zip(SPLITS, files)}
    vocabulary: dict[str, None] = {}
    for split in SPLITS:
        vocabulary.update(dict.fromkeys(tokens[split]))  # first appearance, train then valid then test
    index = {word: i for i, word in enumerate(vocabulary)}
    ids = {split: torch.from_numpy(np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))) for split, words in tokens.items()}
    return tuple(vocabulary), ids


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """(N,) -> (B, N // B): row b is the b-th contiguous chunk; the remainder is dropped."""
    columns = len(ids) // batch_size
    return ids[: columns * batch_size].view(batch_size, columns)


def window(data: Tensor, start: int, bptt: int) -> tuple[Tensor, Tensor]:
    """Inputs data[:, start:start+L] and targets shifted by one, L = min(bptt, columns - 1 - start)."""
    length = min(bptt, data.shape[1] - 1 - start)
    return data[:, start : start + length], data[:, start + 1 : start + 1 + length]


def n_windows(columns: int, bptt: int) -> int:
    return math.ceil((columns - 1) / bptt)


class PTBTask:
    """Penn Treebank language model, characters (BPC) or words (perplexity), with carried hidden state.

    Defaults are the nnRNN protocol: embedding 200, windows of 150, batch 128 for training and 10 for
    evaluation, embedding and decoder weights U(-0.1, 0.1), decoder bias 0, no tying.
    Metrics: `loss` (nats per token), `acc` (top-1 next token), and `bpc` = loss / ln 2 (char) or
    `ppl` = exp(loss) (word). Evaluation pools all tokens of a split; unlike the nnRNN code it does
    not count the last row, which has no target, in the denominator.
    """

    readout_mode: Literal["all", "last"] = "all"
    primary_metric = "val/loss"
    eval_splits = ("val",)
    final_splits = ("test",)
    baselines: ClassVar[dict[str, float]] = {}  # the papers' figures draw none (a uniform guess, ln V, is far above every curve)
    # --smoke: a thousand tokens in narrow batches and short windows (the files are still read and
    # checksummed); a small embedding to match the smoke models' width when the decoder is tied
    smoke_options: ClassVar[dict] = {"subset": 1000, "batch_size": 4, "eval_batch_size": 10, "bptt": 20, "embedding_size": 16}

    def __init__(
        self,
        level: Level = "char",
        bptt: int = 150,
        batch_size: int = 128,
        eval_batch_size: int = 10,
        embedding_size: int = 200,
        init_range: float = 0.1,  # embedding and decoder weights U(-r, r)
        tie_weights: bool = False,  # decoder weight = embedding (needs hidden size = embedding size)
        subset: int | None = None,  # only the first `subset` tokens of each split (smoke runs)
        data_dir: str | None = None,
    ) -> None:
        for name, value in (("bptt", bptt), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("embedding_size", embedding_size)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        train_tokens = min(TOKENS[level]["train"], subset or TOKENS[level]["train"])
        if train_tokens // batch_size < 2:
            raise ValueError(f"{train_tokens} training tokens make no window at batch_size {batch_size}")
        self.level, self.bptt, self.batch_size, self.eval_batch_size = level, bptt, batch_size, eval_batch_size
        self.embedding_size, self.init_range, self.tie_weights = embedding_size, init_range, tie_weights
        self.subset, self.data_dir = subset, data_dir
        self.input_size = embedding_size
        self.output_size = VOCAB_SIZE[level]
        self.steps_per_epoch = n_windows(train_tokens // batch_size, bptt)
        self.device = torch.device("cpu")
        self._embedding: nn.Embedding | None = None
        self._data: dict[str, Tensor] = {}

    def setup(self, device: torch.device, data_dir: str | None) -> None:
        self.device = device
        vocabulary, ids = load_corpus(str(data_root(self.data_dir, data_dir)), self.level)
        if len(vocabulary) != self.output_size:
            raise DataError(f"PTB {self.level}: {len(vocabulary)} symbols, expected {self.output_size}")
        sizes = {"train": self.batch_size, "val": self.eval_batch_size, "test": self.eval_batch_size}
        for split, size in sizes.items():
            stream = ids[SPLIT_NAME.get(split, split)]
            self._data[split] = batchify(stream[: self.subset] if self.subset else stream, size).to(device)

    def encoder(self) -> nn.Module:
        self._embedding = nn.Embedding(self.output_size, self.embedding_size)
        nn.init.uniform_(self._embedding.weight, -self.init_range, self.init_range)
        return self._embedding

    def readout(self, hidden_size: int) -> nn.Module:
        decoder = nn.Linear(hidden_size, self.output_size)
        nn.init.zeros_(decoder.bias)
        if self.tie_weights:
            if hidden_size != self.embedding_size or self._embedding is None:
                raise ValueError(f"tie_weights needs hidden size = embedding_size ({hidden_size} != {self.embedding_size})")
            decoder.weight = self._embedding.weight  # build_model builds the encoder first
        else:
            nn.init.uniform_(decoder.weight, -self.init_range, self.init_range)
        return decoder

    def train_batch(self, step: int, seed: int) -> Batch:
        index = step % self.steps_per_epoch  # the same windows, in order, every epoch
        inputs, targets = window(self._data["train"], index * self.bptt, self.bptt)
        return Batch(inputs, targets, reset_state=index == 0)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs.reshape(-1, self.output_size), targets.reshape(-1))  # mean over B * L

    def named_metrics(self, loss: float, acc: float) -> dict[str, float]:
        scaled = {"bpc": loss / math.log(2)} if self.level == "char" else {"ppl": math.exp(min(loss, 50.0))}
        return {"loss": loss, **scaled, "acc": acc}

    def metric_names(self) -> tuple[str, ...]:
        return tuple(self.named_metrics(0.0, 0.0))

    def batch_metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """As `named_metrics` but on the device (no host read per step); the loop records the loss itself."""
        loss = self.loss(outputs, targets)
        scaled = {"bpc": loss / math.log(2)} if self.level == "char" else {"ppl": torch.exp(loss.clamp(max=50.0))}
        return {**scaled, "acc": (outputs.argmax(-1) == targets).float().mean()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Token-pooled loss and accuracy over one pass of the split, carrying the state across windows."""
        was_training = model.training
        model.eval()
        data = self._data[split]
        total_loss, correct, count, state = 0.0, 0, 0, None
        for start in range(0, data.shape[1] - 1, self.bptt):
            inputs, targets = window(data, start, self.bptt)
            outputs, state = model(inputs, state)  # (B, L, V); no graph under no_grad, nothing to detach
            total_loss += F.cross_entropy(outputs.reshape(-1, self.output_size), targets.reshape(-1), reduction="sum").item()
            correct += int((outputs.argmax(-1) == targets).sum())
            count += targets.numel()
        model.train(was_training)
        return self.named_metrics(total_loss / count, correct / count)
