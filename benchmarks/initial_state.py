"""Where an untrained model starts on psMNIST: the RNN's last hidden state and the initial cross-entropy,
for each `input_bias_init` (docs/protocol.md): `hidden_size` (the paper-era code: V = nn.Linear(N, N)'s
bias, U(±1/√N)) and `fan_in` (the later release: U = nn.Linear(1, N)'s bias, U(±1)).

    python benchmarks/initial_state.py --json benchmarks/results/initial-state.json --markdown benchmarks/results/initial-state.md

The models are built from `jobs/nnrnn-psmnist-hidden.yaml`'s RNN and RNN-orth variants (N = 512,
modReLU) through raylab's own task and model code, on 500 validation images of the real permuted
MNIST (the data folder: `--data`, else ../shared/data or $RAYLAB_DATA), one seed per row. No Ray here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raylab.networks.model import build_model  # noqa: E402
from raylab.planning.sweep import load_sweep  # noqa: E402
from raylab.spec.registry import build  # noqa: E402
from raylab.tasks import TASKS  # noqa: E402

JOB = ROOT / "jobs" / "nnrnn-psmnist-hidden.yaml"
LAWS = ("hidden_size", "fan_in")


def measure(trial: dict, law: str, seed: int, data: str, images: int) -> dict:
    task = build(TASKS, {**trial["task"], "data_dir": data, "download": False}, "task")
    task.setup(torch.device("cpu"), data)
    torch.manual_seed(seed)
    model = build_model(task, {**trial["cell"], "input_bias_init": law}, trial["hidden_size"]).eval()
    inputs = task.features(task._images["val"][:images])
    targets = task._labels["val"][:images]
    with torch.no_grad():
        hidden, _ = model.cell(model.encoder(inputs))
        logits = model.readout(hidden[:, -1])
    return {"hidden_abs_last": float(hidden[:, -1].abs().mean()), "cross_entropy": float(F.cross_entropy(logits, targets))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = os.environ.get("RAYLAB_DATA") or str(ROOT.parent / "shared" / "data")
    parser.add_argument("--data", default=default_data)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    trials = {t["variant"]: t for t in load_sweep(JOB).trials if t["variant"] in ("RNN", "RNN-orth") and t["seed"] == 0}
    rows = []
    for variant, trial in trials.items():
        for law in LAWS:
            for seed in range(args.seeds):
                rows.append({"variant": variant, "input_bias_init": law, "seed": seed, **measure(trial, law, seed, args.data, args.images)})
                print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"# psMNIST, untrained, N = 512, modReLU: {args.images} validation images, {args.seeds} seeds (mean, min-max)",
        "",
        "| variant | input_bias_init | mean abs h at step 784 | initial cross-entropy (ln 10 = 2.30) |",
        "|---|---|---|---|",
    ]
    for variant in trials:
        for law in LAWS:
            group = [r for r in rows if r["variant"] == variant and r["input_bias_init"] == law]
            h, ce = [r["hidden_abs_last"] for r in group], [r["cross_entropy"] for r in group]
            lines.append(f"| {variant} | {law} | {statistics.mean(h):.3g} ({min(h):.3g}-{max(h):.3g}) | {statistics.mean(ce):.3g} ({min(ce):.3g}-{max(ce):.3g}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(["python", "benchmarks/initial_state.py", *sys.argv[1:]]), "rows": rows}, indent=1))
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
