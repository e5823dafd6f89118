"""Live progress on a terminal: a bar per running trial, the tally, the best value so far.

`LiveProgress` is the Tune callback of every run. When standard output is a terminal it redraws a
small block at the bottom of the screen (finished, stopped and failed trials still print one line
each above it); otherwise (cluster logs, CI, a pipe) it is exactly `ProgressPrinter`: one line per
event. The choice is made at every call, so a run resumed without a terminal logs plain lines.
`Board` is the display's state and text, with no Ray and no terminal in it.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import raylab.execution.raystart  # noqa: F401 - sets Tune's environment, which must precede importing Tune

from ray import tune  # noqa: E402

from raylab.planning.space import primary_metric
from raylab.planning.sweep import trial_name
from raylab.results.collect import last_line
from raylab.training.ending import END_KEY, END_LR_STOP, terminated_status
from raylab.training.metrics import metric_mode

REDRAW_EVERY_S = 0.25  # at most four redraws a second: cheap on a slow terminal or an ssh link
BAR_WIDTH = 24


SIGINT_SEEN = threading.Event()  # set by ProgressPrinter's handler: Tune itself swallows the first Ctrl-C


def named_trial(config: dict) -> dict:
    """The trial a name is made from: a sample trained on another seed than its base (`seeds_per_sample`) shows that seed."""
    if config.get("sample_seed") is not None:
        return {**config["trial"], "seed": config["sample_seed"]}
    return config["trial"]


def trial_dirname(trial: Any) -> str:
    return f"{trial_name(named_trial(trial.config))}-{trial.trial_id}"


def trial_display_name(trial: Any) -> str:
    if trial.config.get("sample"):  # a searched trial: its sample number tells it from its siblings
        number = trial.config.get("sample_number")  # raylab's searcher numbers its samples; Tune's generator numbers its trials
        return f"{trial_name(named_trial(trial.config))}#{number if number is not None else trial.trial_id.rsplit('_', 1)[-1].lstrip('0') or '0'}"
    return trial_name(trial.config["trial"])


class ProgressPrinter(tune.Callback):
    """Tune callback: one line per evaluation, per finished or failed trial, and a periodic tally."""

    SHOWN_METRICS = ("train/loss", "val/loss", "val/acc", "val/bpc", "test/loss", "test/acc", "test/bpc")

    def __init__(self, tally_every_s: float = 30.0) -> None:
        # No stream attribute: Tune pickles callbacks into tuner.pkl, so print to sys.stdout at call time.
        self.tally_every_s = tally_every_s
        self.expected = 0  # the sweep's trials, made or not yet (set in `setup`, at every start)
        self.start = time.monotonic()
        self.last_tally = self.start

    def setup(self, **info: Any) -> None:
        """Note a Ctrl-C before Tune's handler (installed just before this) takes it: Tune then ends
        the run normally, and only this flag tells the runner that trials were left unfinished."""
        # At every start, restores included: the clock pickled in tuner.pkl is another process's.
        self.start = self.last_tally = time.monotonic()
        # Every trial the sweep will have, also those Tune has not made yet (it makes 200 at a time).
        self.expected = info.get("total_num_samples") or 0
        try:
            tune_handler = signal.getsignal(signal.SIGINT)
        except ValueError:
            return

        def note_and_pass_on(signum: int, frame: Any) -> None:
            SIGINT_SEEN.set()
            if callable(tune_handler):
                tune_handler(signum, frame)

        try:
            signal.signal(signal.SIGINT, note_and_pass_on)
        except ValueError:  # not the main thread: no signals here
            pass

    def _print(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.start)
        print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}", flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        budget = trial.config["trial"]["training"]
        total = budget.get("steps") or f"{budget.get('epochs')} epochs"
        shown = "  ".join(f"{k} {result[k]:.4g}" for k in ProgressPrinter.SHOWN_METRICS if isinstance(result.get(k), (int, float)))
        flag = "  DIVERGED" if result.get("diverged") else ""
        self._print(f"{trial_display_name(trial):<28} step {result.get('step', '?')}/{total}  {shown}{flag}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        status = terminated_status([last], bool(trial.config.get("sample")), trial.config["trial"]["training"])  # as results will say
        outcome = {
            "diverged": "diverged (non-finite loss)",
            "stopped": "stopped early by the scheduler",
            "finished": "finished (lr fell below lr_stop_below)" if last.get(END_KEY) == END_LR_STOP else "finished",
        }[status]
        self._print(f"{trial_display_name(trial):<28} {outcome}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(f"{trial_display_name(trial):<28} failed, retrying from its last checkpoint: {first_error_line(trial)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(f"{trial_display_name(trial):<28} failed, no retries left: {first_error_line(trial)}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self.last_tally >= self.tally_every_s:
            self.last_tally = now
            self._print(tally(trials, self.expected))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if not SIGINT_SEEN.is_set():  # after Ctrl-C, Tune's statuses are not the truth; the runner reports
            self._print(tally(trials, self.expected))


def tally(trials: list, expected: int = 0) -> str:
    """`trials: 1000 total, 998 pending, 2 running`: trials Tune has not made yet count as pending."""
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    not_made = max(0, expected - len(trials))
    if not_made:
        counts["PENDING"] = counts.get("PENDING", 0) + not_made
    order = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")
    labels = {"TERMINATED": "done", "ERROR": "errored"}
    parts = [f"{counts[s]} {labels.get(s, s.lower())}" for s in order if counts.get(s)]
    return f"trials: {len(trials) + not_made} total, " + ", ".join(parts)


def first_error_line(trial: Any) -> str:
    """The exception line of a failed trial's error file (the traceback stays in the file)."""
    return last_line(getattr(trial, "error_file", None)) or "see the trial's error.txt"


@dataclass
class Board:
    metric: str  # "best so far" is of this metric, e.g. val/loss
    mode: str  # "min" or "max"
    running: dict[str, tuple[int, int, float | None]] = field(default_factory=dict)  # name -> (step, total, metric value)
    best: tuple[float, str] | None = None  # (value, trial name)

    def update(self, name: str, step: int, total: int, result: dict) -> None:
        value = result.get(self.metric)
        value = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
        self.running[name] = (step, total, value if value is not None else self.running.get(name, (0, 0, None))[2])
        if value is not None and (self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0])):
            self.best = (value, name)

    def end(self, name: str) -> None:
        self.running.pop(name, None)

    def lines(self, tally_line: str, rows: int, columns: int) -> list[str]:
        """The block: one bar per running trial (as many as fit), the tally, the best so far."""
        shown = sorted(self.running.items())
        room = max(rows - 3, 1)
        lines = [bar_line(name, *state, self.metric) for name, state in shown[:room]]
        if len(shown) > room:
            lines.append(f"  ... and {len(shown) - room} more running")
        best = f"best {self.metric} so far: {self.best[0]:.4g} ({self.best[1]})" if self.best else f"best {self.metric} so far: —"
        lines += [tally_line, best]
        return [line[: max(columns - 1, 20)] for line in lines]


def bar_line(name: str, step: int, total: int, value: float | None, metric: str) -> str:
    filled = int(BAR_WIDTH * min(step / total, 1.0)) if total else 0
    shown = f"  {metric} {value:.4g}" if value is not None else ""
    return f"{name:<28} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {step}/{total}{shown}"


def on_terminal() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb"


class LiveProgress(ProgressPrinter):
    """ProgressPrinter's lines, or on a terminal a live block redrawn in place."""

    def __init__(self, metric: str, mode: str | None = None, tally_every_s: float = 30.0) -> None:
        super().__init__(tally_every_s)
        self.board = Board(metric, mode or metric_mode(metric))
        self.drawn = 0  # lines of the block now on screen
        self.last_draw = 0.0
        self.trials: list = []
        self.shown: list[str] = []  # the block's lines as last drawn

    def _print(self, text: str) -> None:
        if not on_terminal():
            super()._print(text)
            return
        self._erase()
        super()._print(text)
        self._draw()

    def _erase(self) -> None:
        if self.drawn:
            sys.stdout.write(f"\x1b[{self.drawn}F\x1b[J")  # to the block's first line, clear to the end of the screen
            self.drawn = 0

    def _draw(self, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self.last_draw < REDRAW_EVERY_S:
            return
        self.last_draw = now
        size = shutil.get_terminal_size()
        lines = self.board.lines(tally(self.trials, self.expected), size.lines, size.columns)
        if not force and self.drawn and lines == self.shown:
            return  # nothing changed: no output (a terminal log stays small)
        self._erase()
        self.shown = lines
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        self.drawn = len(lines)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not on_terminal():
            super().on_trial_result(iteration, trials, trial, result, **info)
            return
        self.trials = trials
        budget = trial.config["trial"]["training"]
        total = budget.get("steps") or int(result.get("step", 0) / max(result.get("epoch", 1), 1e-9) * budget.get("epochs", 1))
        self.board.update(trial_display_name(trial), int(result.get("step", 0)), int(total), result)
        self._draw(force=False)

    def _ended(self, trial: Any) -> None:
        self.board.end(trial_display_name(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)
        super().on_trial_complete(iteration, trials, trial, **info)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)
        super().on_trial_error(iteration, trials, trial, **info)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not on_terminal():
            super().on_step_end(iteration, trials, **info)
            return
        self.trials = trials
        self._draw(force=False)  # the tally moves as trials start, even before they report

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if on_terminal():
            self._erase()
            self.board.running.clear()
            best = self.board.lines("", 3, 200)[-1]
            super()._print(f"{tally(trials, self.expected)}; {best}")
            return
        super().on_experiment_end(trials, **info)


def live_progress(sweep: Any) -> LiveProgress:
    """The run's progress callback; "best so far" is of the search's metric, else the task's primary one."""
    search = sweep.spec.search
    metric = search.metric if search is not None and search.metric else primary_metric(sweep.trials[0])
    return LiveProgress(metric, search.mode if search is not None else None)
