"""Does a gradient clip bind on the adding problem? The IndRNN of `jobs/indrnn-adding-500.yaml` trained
for its first steps as the job does (Adam 2e-4, batch 32, fresh data), measuring at every step:

- the largest |dL/d pre-activation| of each recurrence (what the Theano code's in-BPTT
  `grad_clipping=10` would clip), and
- the largest |dL/d parameter| (what raylab's `clip_grad_value: 10` would clamp).

    python benchmarks/adding_clipping.py --steps 300 --json benchmarks/results/adding-clipping.json --markdown benchmarks/results/adding-clipping.md

The model, data and optimizer are the job's resolved trial built by raylab (`build_model`, the task's
own batches, Adam at the job's lr, |u| clamped after each step), trained without any clip, so what is
measured is what an unclipped run meets; no Ray here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raylab.networks.model import build_model  # noqa: E402
from raylab.planning.sweep import load_sweep  # noqa: E402
from raylab.spec.registry import build  # noqa: E402
from raylab.tasks import TASKS  # noqa: E402

JOB = ROOT / "jobs" / "indrnn-adding-500.yaml"
CLIP = 10.0


def measure(trial: dict, steps: int) -> tuple[list[float], list[float]]:
    """Per step: the largest |dL/dz| over the recurrences' inputs z, and the largest |dL/dparameter|."""
    task = build(TASKS, trial["task"], "task")
    task.setup(torch.device("cpu"), None)
    torch.manual_seed(trial["seed"])
    model = build_model(task, trial["cell"], trial["hidden_size"])
    optimizer = torch.optim.Adam(model.parameters(), lr=trial["optimizer"]["lr"])
    seen: list[float] = []

    def watch_input(module: torch.nn.Module, inputs: tuple) -> None:  # returns None: the inputs go on unchanged
        inputs[0].register_hook(lambda grad: seen.append(float(grad.abs().max())))

    for recurrence in model.cell.recurrences:  # z in relu(z + u * h): the pre-activation Theano's grad_clipping clips
        recurrence.register_forward_pre_hook(watch_input)
    pre_activation, parameter = [], []
    for step in range(steps):
        seen.clear()
        batch = task.train_batch(step, trial["seed"])
        outputs, _ = model(batch.inputs)
        loss = task.loss(outputs, batch.targets)
        optimizer.zero_grad()
        loss.backward()
        pre_activation.append(max(seen))
        parameter.append(max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None))
        optimizer.step()
        model.after_optimizer_step()  # |u| clamped, as the loop does
    return pre_activation, parameter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for seed in range(args.seeds):
        (trial,) = [t for t in load_sweep(JOB, [f"seeds=[{seed}]"]).trials if t["variant"] == "IndRNN"]
        pre_activation, parameter = measure(trial, args.steps)
        rows.append({
            "seed": seed,
            "steps": args.steps,
            "max_pre_activation_grad": max(pre_activation),
            "steps_pre_activation_over_clip": sum(v > CLIP for v in pre_activation),
            "max_parameter_grad": max(parameter),
            "steps_parameter_over_clip": sum(v > CLIP for v in parameter),
        })
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"# Adding problem T=500, IndRNN 2 x 128 (jobs/indrnn-adding-500.yaml), first {args.steps} steps, no clip",
        "",
        "| seed | largest dL/d pre-activation | steps where it passes 10 | largest dL/d parameter | steps where it passes 10 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['max_pre_activation_grad']:.3g} | {r['steps_pre_activation_over_clip']} of {r['steps']} | "
                     f"{r['max_parameter_grad']:.3g} | {r['steps_parameter_over_clip']} of {r['steps']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(["python", "benchmarks/adding_clipping.py", *sys.argv[1:]]), "rows": rows}, indent=1))
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
