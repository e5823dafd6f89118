"""Why a trial ended, as the loop records it in its reports, and the status that follows from it.

Every report of `loop.run_trial` carries `report_format: REPORT_FORMAT`; the last report of a trial
that the loop itself ended carries `end`: "budget" (its steps or epochs ran out), "lr_stop" (the lr
schedule's `lr_stop_below`) or "diverged" (with `diverged: 1`). A trial that something outside the
loop ended (a search's scheduler) reported, but has no `end`. Torch-free: `results` and the live
output read it too.
"""

from __future__ import annotations

REPORT_FORMAT = 2  # 2: reports record `end`. Trials without `report_format` were written before that.
FORMAT_KEY = "report_format"
END_KEY = "end"
END_BUDGET, END_LR_STOP, END_DIVERGED = "budget", "lr_stop", "diverged"
FINISHED_ENDS = (END_BUDGET, END_LR_STOP)


def terminated_status(results: list[dict], searched: bool, training: dict) -> str:
    """`finished`, `diverged` or `stopped`: the status of a trial that Tune terminated (ended without an
    error), from its reports, oldest first.

    The record of the last report written by a loop that records why it ended decides: `end` budget or
    lr_stop is finished, diverged is diverged, no `end` is stopped (ended from outside the loop). Trials
    written before the record keep the old rule: a searched trial below its budget was stopped.
    """
    if any(row.get("diverged") for row in results):
        return "diverged"
    recorded = [row for row in results if FORMAT_KEY in row]
    if recorded:
        end = recorded[-1].get(END_KEY)
        if end == END_DIVERGED:
            return "diverged"
        return "finished" if end in FINISHED_ENDS else "stopped"
    if searched and results and not reached_budget(results, training):
        return "stopped"  # before the record: Tune terminated a searched trial below its budget, its scheduler did
    return "finished"


def reached_budget(results: list[dict], training: dict) -> bool:
    """Whether a trial's reports reach its training budget (the last evaluation is at the budget)."""
    if training.get("steps") is not None:
        return max((int(r["step"]) for r in results if "step" in r), default=0) >= int(training["steps"])
    return max((float(r["epoch"]) for r in results if "epoch" in r), default=0.0) >= float(training["epochs"]) - 1e-9
