"""Sequential and permuted pixel MNIST (nnRNN reference §6.2, IndRNN reference §3.2).

The whole data set lives on the task's device as uint8 tensors, (60000, 784) and (10000, 784), with
the permutation already applied to the columns: a batch is one index into them and a conversion to
float, never per-example Python decoding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raylab.tasks.data import DataError, checked_file, data_root, read_idx_gz
from raylab.tasks.protocol import Batch, Purpose, evaluate_batches, stream

N_TRAIN, N_TEST, N_PIXELS = 60_000, 10_000, 784
FILES = {
    "train": ("MNIST/raw/train-images-idx3-ubyte.gz", "MNIST/raw/train-labels-idx1-ubyte.gz"),
    "test": ("MNIST/raw/t10k-images-idx3-ubyte.gz", "MNIST/raw/t10k-labels-idx1-ubyte.gz"),
}


def permutation_and_split(seed: int = 1234, val_size: int = 10_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixel order, train indices, validation indices), as the nnRNN code draws them.

    One `RandomState(seed)` stream gives first the pixel permutation, then a permutation of the 60k
    training images whose first 60k - val_size are the training set and the rest validation. The
    stream is independent of the trial seed, so every trial and every seed sees the same split. The
    permutation is drawn even for unpermuted MNIST, so that sMNIST and psMNIST share one split.
    """
    rng = np.random.RandomState(seed)
    order = rng.permutation(N_PIXELS)
    shuffled = rng.permutation(N_TRAIN)
    return order, shuffled[: N_TRAIN - val_size], shuffled[N_TRAIN - val_size :]


def load_mnist(root: str, download: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images (60000, 28, 28), labels), "test": ...} as uint8, checksums verified."""
    root_path = Path(root)
    missing = [name for pair in FILES.values() for name in pair if not (root_path / name).is_file()]
    if missing and download:
        download_mnist(root_path)
    hint = "set the task's data_dir, `raylab run --data-dir` or RAYLAB_DATA to a folder with MNIST/raw/*.gz, or download: true"
    loaded = {}
    for split, (images_file, labels_file) in FILES.items():
        images = read_idx_gz(str(checked_file(root_path, images_file, hint)))
        labels = read_idx_gz(str(checked_file(root_path, labels_file, hint)))
        loaded[split] = (images, labels)
    return loaded


def download_mnist(root: Path) -> None:
    """Fetch MNIST with torchvision into `root`; on failure, remove the folders it created (left empty)."""
    import torchvision  # only for its download, into a writable root

    created = [folder for folder in (root, root / "MNIST", root / "MNIST" / "raw") if not folder.exists()]
    try:
        for train in (True, False):
            torchvision.datasets.MNIST(str(root), train=train, download=True)
    except (RuntimeError, OSError) as error:  # torchvision raises RuntimeError when every mirror fails
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        reason = str(error).strip().splitlines()[-1].strip() if str(error).strip() else type(error).__name__
        raise DataError(f"{root}: MNIST download failed ({reason}); put MNIST/raw/*.gz there, or set download: false and data_dir") from None


class MNISTTask:
    """Pixel MNIST, sequential or permuted: 784 steps of one pixel, the class read from the last state.

    Defaults follow the nnRNN code: pixels in [0, 1] (ToTensor, no normalisation), permutation and a
    50k/10k train/validation split from RandomState(1234), batch 100 in a fixed (unshuffled) order,
    the best-validation model evaluated on the 10k test set.
    """

    output_size = 10
    readout_mode: Literal["all", "last"] = "last"
    primary_metric = "val/acc"
    eval_splits = ("val",)
    final_splits = ("test",)
    baselines: ClassVar[dict[str, float]] = {}  # the papers' figures draw none (chance, 10%, is far below every curve)
    # --smoke: a few small batches of rows of 28 pixels (28 steps), a few evaluation images
    smoke_options: ClassVar[dict] = {"subset": 16, "batch_size": 4, "eval_batch_size": 8, "pixels_per_step": 28}

    def __init__(
        self,
        permute: bool = True,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        shuffle: bool = False,  # nnRNN: False (the same order every epoch); True: a fresh order per (seed, epoch)
        pixels: Literal["unit", "centered"] = "unit",  # unit: x/255 (nnRNN); centered: (x/256 - 0.5) * 2 (IndRNN)
        val_size: int = 10_000,  # IndRNN's PyTorch code holds out 3000 (a 95/5 split)
        permutation_seed: int = 1234,
        pixels_per_step: int = 1,  # 1: 784 steps (both papers); 28: row by row, 28 steps (smoke runs)
        readout_init: Literal["default", "kaiming"] = "default",  # nn.Linear's (nnRNN) or kaiming normal, bias 0 (IndRNN)
        subset: int | None = None,  # only the first `subset` images of each split (smoke runs)
        download: bool = True,  # fetch with torchvision when the files are missing from the data root
        data_dir: str | None = None,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("subset", subset)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if pixels_per_step < 1 or N_PIXELS % pixels_per_step:
            raise ValueError(f"pixels_per_step must divide {N_PIXELS}, got {pixels_per_step}")
        if not 0 < val_size < N_TRAIN:
            raise ValueError(f"val_size must be in (0, {N_TRAIN}), got {val_size}")
        self.permute, self.batch_size, self.eval_batch_size, self.shuffle = permute, batch_size, eval_batch_size, shuffle
        self.pixels, self.val_size, self.permutation_seed, self.readout_init = pixels, val_size, permutation_seed, readout_init
        self.subset, self.download, self.data_dir = subset, download, data_dir
        self.input_size = pixels_per_step
        self.n_train = min(N_TRAIN - val_size, subset or N_TRAIN)
        self.steps_per_epoch = math.ceil(self.n_train / batch_size)
        self.device = torch.device("cpu")
        self._images: dict[str, Tensor] = {}
        self._labels: dict[str, Tensor] = {}

    def setup(self, device: torch.device, data_dir: str | None) -> None:
        self.device = device
        root = data_root(self.data_dir, data_dir)
        try:
            data = load_mnist(str(root), self.download)
        except OSError as error:  # e.g. no network for the download, or a read-only root
            raise DataError(f"MNIST under {root}: {error}") from error
        order, train_idx, val_idx = permutation_and_split(self.permutation_seed, self.val_size)
        columns = order if self.permute else np.arange(N_PIXELS)
        sources = {"train": ("train", train_idx), "val": ("train", val_idx), "test": ("test", np.arange(N_TEST))}
        for split, (source, indices) in sources.items():
            images, labels = data[source]
            indices = indices[: self.subset] if self.subset else indices
            flat = images.reshape(len(images), N_PIXELS)[indices][:, columns]  # (n, 784), pixel order applied
            self._images[split] = torch.from_numpy(np.ascontiguousarray(flat)).to(device)
            self._labels[split] = torch.from_numpy(labels[indices].astype(np.int64)).to(device)

    def features(self, images: Tensor) -> Tensor:
        """uint8 (B, 784) -> float (B, 784 / pixels_per_step, pixels_per_step)."""
        if self.pixels == "unit":
            values = images.float() / 255.0
        else:
            values = (images.float() / 256.0 - 0.5) * 2.0
        return values.view(len(values), -1, self.input_size)

    def encoder(self) -> nn.Module:
        return nn.Identity()

    def readout(self, hidden_size: int) -> nn.Module:
        layer = nn.Linear(hidden_size, self.output_size)
        if self.readout_init == "kaiming":
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        return layer

    def train_batch(self, step: int, seed: int) -> Batch:
        epoch, index = divmod(step, self.steps_per_epoch)
        if self.shuffle:
            order = torch.randperm(self.n_train, generator=stream(seed, Purpose.EPOCH_ORDER, epoch))
            rows = order[index * self.batch_size : (index + 1) * self.batch_size].to(self.device)
        else:
            rows = torch.arange(index * self.batch_size, min((index + 1) * self.batch_size, self.n_train), device=self.device)
        return Batch(self.features(self._images["train"][rows]), self._labels["train"][rows])

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets)

    def batch_metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return {"acc": (outputs.argmax(-1) == targets).float().mean()}

    def metric_names(self) -> tuple[str, ...]:
        return ("loss", "acc")

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        images, labels = self._images[split], self._labels[split]
        size = self.eval_batch_size
        batches = (Batch(self.features(images[i : i + size]), labels[i : i + size]) for i in range(0, len(images), size))
        return evaluate_batches(model, self, batches)
