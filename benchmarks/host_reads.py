"""Host reads of tensor values per training step of `run_trial` (each one is a GPU->host sync on a GPU).

Counts calls of `Tensor.item`, `tolist`, `__float__`, `__int__` and `__bool__` while the loop trains
tiny CPU trials of each task; the evaluation's reads cancel out by differencing a 2k-step run and a
k-step run that both evaluate once at their end:

    reads per step = (reads(2k steps) - reads(k steps)) / k

The same script measures any checkout (`PYTHONPATH=<checkout> python benchmarks/host_reads.py`), so
before and after a change are counted the same way. Needs the data folder for MNIST and PTB
(`--data-dir`, default $RAYLAB_DATA).

    python benchmarks/host_reads.py --json benchmarks/results/host-reads.json --markdown benchmarks/results/host-reads.md
"""

from __future__ import annotations

import argparse
import json
import os
from contextlib import contextmanager

import torch

from raylab.training.loop import run_trial

READS = ("item", "tolist", "__float__", "__int__", "__bool__")
STEPS = 50  # k: the difference of a 2k- and a k-step run
TRIALS = {
    "copy": {"name": "copy", "delay": 10, "batch_size": 4, "eval_size": 4},
    "adding": {"name": "adding", "length": 20, "batch_size": 4, "eval_size": 4},
    "psmnist": {"name": "mnist", "subset": 16, "batch_size": 4, "eval_batch_size": 8, "pixels_per_step": 28, "download": False},
    "ptb-char": {"name": "ptb", "bptt": 10, "batch_size": 4, "eval_batch_size": 4, "subset": 400, "embedding_size": 8},
}


@contextmanager
def counting(counter: dict[str, int]):
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name):
        original = originals[name]

        def counted(self, *args, **kwargs):
            counter[name] = counter.get(name, 0) + 1
            return original(self, *args, **kwargs)

        return counted

    for name in READS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def reads(task: dict, steps: int, data_dir: str | None) -> int:
    trial = {"task": task, "cell": {"name": "lstm"}, "optimizer": {"name": "rmsprop", "lr": 1e-3},
             "training": {"steps": steps, "eval_every": steps}, "hidden_size": 8, "seed": 0}
    counter: dict[str, int] = {}
    with counting(counter):
        run_trial(trial, lambda metrics, checkpoint: None, None, data_dir, torch.device("cpu"))
    return sum(counter.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("RAYLAB_DATA"))
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, task in TRIALS.items():
        short, long = reads(task, STEPS, args.data_dir), reads(task, 2 * STEPS, args.data_dir)
        rows.append({"task": name, "reads_per_step": (long - short) / STEPS, f"reads_{STEPS}_steps": short, f"reads_{2 * STEPS}_steps": long})
    lines = ["| task | host reads per training step |", "|---|---|", *(f"| {r['task']} | {r['reads_per_step']:.2f} |" for r in rows)]
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"steps": STEPS, "rows": rows}, out, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write("Host reads of tensor values per training step (`benchmarks/host_reads.py`), LSTM 8 units, CPU.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
