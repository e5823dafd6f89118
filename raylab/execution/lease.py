"""A driver's lease on a sweep folder: one `raylab run` or `raylab resume` at a time drives the runs in it.

Two drivers on one sweep folder would restore the same run and fight over its trials (a finished trial
ended `errored`: its checkpoint was deleted by the other driver). So `run` and `resume` take a lease on
`<storage>/<name>/` before they restore or start anything, and give it back when they end (normally,
on an error, on Ctrl-C). The lease is a file, `raylab-lease.json`, beside the runs, written through
pyarrow.fs like everything else in storage, so it works on local disks and in buckets:

    {"token": "...", "host": "...", "pid": 1234, "command": "raylab run jobs/x.yaml",
     "since": <epoch s>, "heartbeat": <epoch s>}

A background thread renews `heartbeat` every HEARTBEAT_S. Another driver takes the lease over without
being asked only when its owner is certainly gone: on the same host with its pid no longer alive, or
with a heartbeat older than STALE_AFTER_S (any host; clocks must agree to within about a minute).
`--take-over` takes it regardless (the user says the owner is dead; if it is not, both drive the run).

On a local disk a new lease is created atomically (O_EXCL). A bucket has no create-if-absent through
pyarrow, and taking over a stale lease is a replace, so there a driver writes its lease, waits
SETTLE_S, reads it back and keeps it only if its own token is still there. Two drivers
that write within the same SETTLE_S can still both read their own token back on a bucket with
eventual visibility; the heartbeat thread then finds the other's token within HEARTBEAT_S and its
driver stops (docs/resume.md). The lease lives in `execution/` beside `rerun.py`: it decides what a
second driver may do; it needs nothing but `planning/storage.py` and imports no Ray.
"""

from __future__ import annotations

import _thread
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from raylab.planning import storage

LEASE_FILE = "raylab-lease.json"
HEARTBEAT_S = 30.0  # how often the owner renews its lease (tests shorten it)
STALE_AFTER_S = 4 * HEARTBEAT_S  # a heartbeat older than this: the owner is dead (or cut off from storage)
SETTLE_S = 1.0  # between writing the lease and reading it back (a concurrent writer shows up by then)


class LeaseHeld(Exception):
    """Another live driver owns the sweep folder; the message is the one line to print."""


@dataclass
class Lease:
    location: str  # the lease file
    owner: dict  # what this driver wrote
    created_folders: list[str] = field(default_factory=list)  # local folders that taking the lease created, deepest first
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def release(self) -> None:
        """Stop renewing; remove the lease file if it is still this driver's."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        current = read_lease(self.location)
        if current is not None and current.get("token") == self.owner["token"]:
            fs, path = storage.filesystem(self.location)
            try:
                fs.delete_file(path)
            except OSError as error:  # the run's results are safe; the next driver finds the lease stale
                print(f"raylab: warning: could not remove {self.location} ({error}); the next driver takes it over", file=sys.stderr)
        # A run refused before it wrote anything (no GPU, storage not shared) leaves no empty folders behind.
        for folder in self.created_folders:
            try:
                os.rmdir(folder)
            except OSError:  # not empty: the run wrote results there
                break

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lease_location(sweep_dir: str) -> str:
    return storage.join(sweep_dir, LEASE_FILE)


def read_lease(location: str) -> dict | None:
    """The lease's content; None if there is none. An unreadable (torn) lease is an empty dict: its
    writer died while writing, so it is stale."""
    try:
        text = storage.read_text(location)
    except (FileNotFoundError, OSError):
        return None
    try:
        content = json.loads(text)
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    except (OSError, OverflowError, ValueError):
        return False
    return True


def stale_reason(owner: dict, now: float) -> str | None:
    """Why a lease's owner is certainly gone, or None if it may be alive."""
    heartbeat = owner.get("heartbeat")
    if not isinstance(heartbeat, (int, float)):
        return "its lease file is unreadable"
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) and not pid_alive(owner["pid"]):
        return f"its process {owner['pid']} on this host is gone"
    if now - heartbeat > STALE_AFTER_S:
        return f"its last heartbeat is {now - heartbeat:.0f} s old"
    return None


def describe_owner(owner: dict, now: float) -> str:
    since = datetime.fromtimestamp(owner.get("since", now)).strftime("%Y-%m-%d %H:%M:%S")
    beat = now - owner.get("heartbeat", now)
    return f"`{owner.get('command', 'raylab')}`, pid {owner.get('pid')} on host {owner.get('host')}, since {since}, last heartbeat {beat:.0f} s ago"


def held_message(sweep_dir: str, owner: dict, now: float) -> str:
    return (
        f"{sweep_dir} is being driven by {describe_owner(owner, now)}; wait for it to end (a dead driver's lease "
        f"is taken over on its own after {STALE_AFTER_S:.0f} s without a heartbeat), or pass --take-over if you know "
        "it is dead (docs/resume.md)"
    )


def held_by_other(sweep_dir: str) -> str | None:
    """The one line `acquire` would refuse with, or None (for `--dry-run`, which takes no lease)."""
    owner = read_lease(lease_location(sweep_dir))
    now = time.time()
    if owner is None or stale_reason(owner, now) is not None:
        return None
    return held_message(sweep_dir, owner, now)


def acquire(sweep_dir: str, command: str, take_over: bool = False) -> Lease:
    """Take the sweep folder's lease, or raise LeaseHeld with one line naming the owner."""
    location = lease_location(sweep_dir)
    now = time.time()
    existing = read_lease(location)
    if existing is not None:
        reason = "--take-over" if take_over else stale_reason(existing, now)
        if reason is None:
            raise LeaseHeld(held_message(sweep_dir, existing, now))
        if existing:
            print(f"raylab: taking over {sweep_dir} from {describe_owner(existing, now)} ({reason})", file=sys.stderr, flush=True)
    owner = {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "command": command, "since": now, "heartbeat": now}
    created_folders = [] if storage.is_uri(sweep_dir) else [str(folder) for folder in storage.missing_folders(storage.absolute(sweep_dir))]
    if existing is None and not storage.is_uri(location):
        if not create_exclusively(location, json.dumps(owner)):  # another driver created it just now
            return acquire(sweep_dir, command, take_over=False)
    else:
        storage.write_text(location, json.dumps(owner))
        time.sleep(SETTLE_S)
        current = read_lease(location)
        if current is None or current.get("token") != owner["token"]:
            raise LeaseHeld(held_message(sweep_dir, current or {}, time.time()) + " (it took the lease at the same moment)")
    lease = Lease(location, owner, created_folders=created_folders)
    make_interruptible()
    lease.thread = threading.Thread(target=renew, args=(lease,), name="raylab-lease", daemon=True)
    lease.thread.start()
    return lease


def make_interruptible() -> None:
    """Let the heartbeat thread stop this driver. It does so as Ctrl-C would (`interrupt_main`),
    which does nothing in a process that ignores SIGINT: a job started with `&` by a script, or by
    `nohup` from one, inherits SIGINT ignored. Such a driver would go on driving a run that another
    one took over, so SIGINT gets Python's own handler back (a background job gets no Ctrl-C from
    the terminal either way)."""
    try:
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: signals are the main thread's to set
        pass


def create_exclusively(path: str, text: str) -> bool:
    """Create a local file, whole, only if it does not exist; False if it exists. Written to a
    temporary name first and linked into place (atomic), so that a reader never sees it half written."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(temporary, "w") as stream:
        stream.write(text)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
    return True


def renew(lease: Lease) -> None:
    """Every HEARTBEAT_S: rewrite the heartbeat while the lease is this driver's. If another driver
    holds it now (`--take-over`, or a write race on a bucket), say so and stop this driver as Ctrl-C
    would: two drivers on one run destroy each other's checkpoints."""
    while not lease.stop.wait(HEARTBEAT_S):
        current = read_lease(lease.location)
        if current is not None and current.get("token") not in (None, lease.owner["token"]):
            print(f"\nraylab: {lease.location} was taken over by {describe_owner(current, time.time())}; stopping this driver",
                  file=sys.stderr, flush=True)
            _thread.interrupt_main()  # the SIGINT path: Tune saves the state and stops, exit 130
            return
        lease.owner["heartbeat"] = time.time()
        try:
            storage.write_text(lease.location, json.dumps(lease.owner))
        except OSError as error:  # storage hiccup: try again next period; a long outage makes the lease stale
            print(f"raylab: warning: could not renew {lease.location} ({error})", file=sys.stderr, flush=True)
