"""Seconds per training iteration (forward, backward, optimizer step) of every cell at the seeds' shapes.

Each cell is timed three ways in the same process, on the same input:
- `raylab_s`: the cell's `forward` (fused kernels, one input projection, hand-written BPTT);
- `nn_rnn_s`: `torch.nn.RNN` (tanh) of the same input and hidden size, the reference for "fast";
- `loop_s`: the cell's `forward_reference`, a plain per-time-step Python loop in autograd, the
  structure of the original nnRNN / IndRNN implementations.
Every iteration is a readout + MSE loss on all steps, `backward()` and an RMSprop step (with the
cell's tagged parameter groups and hooks). Times are medians over `--repeats` after one warm-up.

    python benchmarks/cells.py --json benchmarks/results/cells-cpu.json --markdown benchmarks/results/cells-cpu.md
    python benchmarks/cells.py --quick      # a reduced set of shapes, under a minute

No Ray here: this measures the cells alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from raylab.cells import CELLS
from raylab.spec.config import OptimizerSpec
from raylab.networks.optim import build_optimizer


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    hidden: int
    steps: int
    input_size: int
    note: str = ""


# The seeds' training shapes (nnRNN §6-7). psMNIST runs 784 steps; on CPU a shorter T keeps the run
# short, and per-step costs are what is compared, so the ratios carry over.
SHAPES = {
    "copy": Shape("copy", 10, 128, 220, 10),
    "psmnist": Shape("psmnist", 100, 512, 784, 1),
    "ptb": Shape("ptb", 128, 1024, 150, 200),
}
CPU_STEPS = {"psmnist": 200}  # psMNIST on CPU: T=200 of 784 (stated in the table); per-step costs scale, fixed per-pass costs weigh ~4x more
QUICK = {"copy": Shape("copy", 10, 128, 220, 10), "psmnist": Shape("psmnist", 100, 512, 30, 1, "T=30 (quick)")}
QUICK_CELLS = ("rnn", "rnn_orth", "exprnn", "nnrnn", "indrnn")

# (label, cell spec): the dense-recurrence cells and IndRNN have speed targets; the rest are context.
CELL_SPECS = {
    "rnn": {"name": "rnn", "nonlinearity": "modrelu"},
    "rnn_tanh": {"name": "rnn", "nonlinearity": "tanh"},
    "rnn_orth": {"name": "rnn_orth", "recurrent_init": "henaff"},
    "exprnn": {"name": "exprnn"},
    "nnrnn": {"name": "nnrnn"},
    "indrnn": {"name": "indrnn", "num_layers": 1},
    "lstm": {"name": "lstm"},
    "gru": {"name": "gru"},
    "eurnn": {"name": "eurnn"},
}
TARGETS = {"rnn": 1.5, "rnn_orth": 1.5, "exprnn": 1.5, "nnrnn": 1.5, "indrnn": 1.0}
SKIP = {"ptb": {"eurnn", "gru", "rnn_tanh"}, "psmnist": {"eurnn"}}  # context cells left out where they only cost time


def build_cell(spec: dict, shape: Shape, device: torch.device) -> nn.Module:
    options = {k: v for k, v in spec.items() if k != "name"}
    with torch.device("cpu"):
        return CELLS[spec["name"]](shape.input_size, shape.hidden, **options).to(device)


def iteration(model: nn.Module, forward: Callable, inputs: torch.Tensor, target: torch.Tensor, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """One training step through `forward` (a bound forward or forward_reference)."""
    readout = nn.Linear(model.hidden_size, target.shape[-1]).to(inputs.device)

    def step() -> None:
        outputs, _ = forward(inputs)
        loss = nn.functional.mse_loss(readout(outputs), target)
        penalty = getattr(model, "penalty", None)
        if penalty is not None:
            loss = loss + penalty()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        hook = getattr(model, "after_optimizer_step", None)
        if hook is not None:
            hook()

    return step


def timed_together(steps: dict[str, Callable[[], None]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each step, timed in interleaved rounds after one warm-up each.

    Interleaving makes a busy machine's slow moments hit every implementation alike, so the ratios
    stay meaningful even when the absolute times wander.
    """
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()
    sync()
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(label: str, spec: dict, shape: Shape, repeats: int, device: torch.device, with_loop: bool) -> dict:
    torch.manual_seed(0)
    inputs = torch.randn(shape.batch, shape.steps, shape.input_size, device=device)
    target = torch.randn(shape.batch, shape.steps, 4, device=device)
    spec_opt = OptimizerSpec(lr=1e-4, lr_orth=1e-5)
    cell = build_cell(spec, shape, device)
    steps = {"raylab": iteration(cell, cell.forward, inputs, target, build_optimizer(cell, spec_opt))}
    baseline = nn.RNN(shape.input_size, shape.hidden, nonlinearity="tanh", batch_first=True).to(device)
    baseline.hidden_size = shape.hidden
    steps["nn_rnn"] = iteration(baseline, baseline, inputs, target, build_optimizer(baseline, spec_opt))
    if with_loop:
        looped = build_cell(spec, shape, device)
        steps["loop"] = iteration(looped, looped.forward_reference, inputs, target, build_optimizer(looped, spec_opt))
    seconds = timed_together(steps, repeats, device)
    raylab_s, nn_rnn_s, loop_s = seconds["raylab"], seconds["nn_rnn"], seconds.get("loop")
    record = {
        "cell": label,
        "spec": spec,
        "shape_name": shape.name,
        "shape": [shape.batch, shape.hidden, shape.steps],
        "device": device.type,
        "raylab_s": raylab_s,
        "nn_rnn_s": nn_rnn_s,
        "loop_s": loop_s,
        "ratio_vs_nn_rnn": raylab_s / nn_rnn_s,
        "speedup_vs_loop": loop_s / raylab_s if loop_s else None,
        "target_ratio": TARGETS.get(label),
        "note": shape.note,
    }
    record["target_met"] = None if record["target_ratio"] is None else record["ratio_vs_nn_rnn"] <= record["target_ratio"]
    return record


def markdown(records: list[dict], header: str) -> str:
    lines = [header, "", "| shape (B, N, T) | cell | raylab s | nn.RNN s | loop s | raylab / nn.RNN | target | loop / raylab |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        shape = f"{r['shape_name']} ({', '.join(map(str, r['shape']))})"
        target = "" if r["target_ratio"] is None else f"<= {r['target_ratio']:.1f} {'met' if r['target_met'] else 'MISSED'}"
        loop = f"{r['loop_s']:.4f}" if r["loop_s"] else "-"
        speedup = f"{r['speedup_vs_loop']:.1f}x" if r["speedup_vs_loop"] else "-"
        lines.append(f"| {shape} | {r['cell']} | {r['raylab_s']:.4f} | {r['nn_rnn_s']:.4f} | {loop} | {r['ratio_vs_nn_rnn']:.2f} | {target} | {speedup} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the records here")
    parser.add_argument("--markdown", help="write the Markdown table here (it is always printed)")
    parser.add_argument("--quick", action="store_true", help="reduced shapes and repeats, under a minute")
    parser.add_argument("--cells", help="comma-separated labels (default: all)")
    parser.add_argument("--shapes", help="comma-separated shape names (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations per measurement (default 5, quick 3)")
    parser.add_argument("--no-loop", action="store_true", help="skip the plain-loop timings")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="intra-op CPU threads (default 1, as a 1-CPU trial gets)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    if args.quick:
        shapes = QUICK
    else:
        shapes = {k: (Shape(s.name, s.batch, s.hidden, CPU_STEPS[k], s.input_size, f"T={CPU_STEPS[k]} on CPU (seed: {s.steps})") if device.type == "cpu" and k in CPU_STEPS else s) for k, s in SHAPES.items()}
    if args.shapes:
        shapes = {k: shapes[k] for k in args.shapes.split(",")}
    labels = args.cells.split(",") if args.cells else list(QUICK_CELLS if args.quick else CELL_SPECS)
    repeats = args.repeats or (3 if args.quick else 5)
    records = []
    for shape_name, shape in shapes.items():
        for label in labels:
            if label in SKIP.get(shape_name, ()) and not args.cells:
                continue
            record = measure(label, CELL_SPECS[label], shape, repeats, device, with_loop=not args.no_loop)
            records.append(record)
            print(f"{shape_name:8s} {label:9s} raylab {record['raylab_s']:.4f}s  nn.RNN {record['nn_rnn_s']:.4f}s  ratio {record['ratio_vs_nn_rnn']:.2f}" + (f"  loop/raylab {record['speedup_vs_loop']:.1f}x" if record["loop_s"] else ""), flush=True)
    header = (
        f"Seconds per training iteration (median of {repeats}), device {device.type}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}."
    )
    table = markdown(records, header)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": device.type, "threads": torch.get_num_threads(), "repeats": repeats, "records": records}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
