"""`raylab submit`, `status` and `logs`: sweeps on a remote Ray cluster through the Ray Jobs API
(raylab/execution/submit.py; docs/cluster.md)."""

from __future__ import annotations

import argparse
import sys

# Each command imports its layers when it runs: `raylab ls`, `status` or `--help` do not load torch,
# pandas or Ray (docs/architecture.md).


def cmd_submit(args: argparse.Namespace) -> int:
    from raylab.execution import submit

    try:
        job_id = submit.submit_sweep(args.file, args.overrides, args.smoke, args.address, args.token_file)
    except submit.ClusterError as error:
        return submit.report(error)
    print(job_id)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from raylab.execution import submit

    try:
        status, message = submit.job_status(args.job_id, args.address, args.token_file)
    except submit.ClusterError as error:
        return submit.report(error)
    print(f"{args.job_id}: {status}" + (f" ({message})" if message else ""))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from raylab.execution import submit

    try:
        if not args.follow:
            print(submit.job_logs(args.job_id, args.address, args.token_file), end="")
            return 0
        status = submit.follow_logs(args.job_id, args.address, args.token_file)
    except submit.ClusterError as error:
        return submit.report(error)
    print(f"\nraylab: job {args.job_id}: {status}", file=sys.stderr)
    return submit.exit_code_for(status)
