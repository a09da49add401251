"""Which trials count, which workers are alive, and Ctrl-C that cannot be lost.

Budget rule (``n_trials``, or the grid's size with the grid sampler): a trial counts when it
COMPLETEs, is PRUNED, or FAILs for a reason its hyperparameters caused (diverged, out of memory).
Infrastructure failures (a worker killed or interrupted) do not count; their parameters are
enqueued again, so a re-run completes the budget. Workers sharing a storage stop asking for
trials once finished plus running trials fill the budget, and a trial that loses the race for the
last slot is failed as ``surplus`` before it trains, so together they complete exactly the budget
with distinct trial numbers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from looksam.reports.model import BUDGET_FAILURES
from looksam.sweeps.schema import CONTROL

#: A RUNNING trial whose worker has not written a heartbeat for this long is taken as dead.
HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 60.0
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
#: Set by Ctrl-C; checked at every progress report so an interrupt cannot be lost (see below).
_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def interrupts_latched() -> Iterator[None]:
    """Make Ctrl-C stick: Python raises KeyboardInterrupt wherever the main thread is, and
    inside a weakref callback or ``__del__`` it is printed and swallowed, so the sweep would
    train on. The handler also sets a flag that progress reports check, which re-raises it."""
    _INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: object) -> None:
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def raise_if_interrupted() -> None:
    """Re-raise a Ctrl-C that something swallowed."""
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """COMPLETE, PRUNED, or FAIL for a hyperparameter-caused reason."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get(CONTROL.failure_reason) in (
        BUDGET_FAILURES
    )


def is_taken(trial: FrozenTrial) -> bool:
    """Counted, or running now: the trial holds a slot of the budget."""
    return counts_toward_budget(trial) or trial.state == TrialState.RUNNING


def lost_the_last_slot(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether trials numbered below ``number`` already take the whole budget (surplus)."""
    ahead = [t for t in study.get_trials(deepcopy=False) if t.number < number and is_taken(t)]
    return len(ahead) >= budget


def fail_trial(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """End a trial we asked for as FAIL with ``reason`` (it trained nothing, or was stopped)."""
    trial.set_user_attr(CONTROL.failure_reason, reason)
    study.tell(trial, state=TrialState.FAIL)


def _worker_alive(worker: str | None, last_seen: float) -> bool:
    """A worker on this host is alive iff its process is; elsewhere, iff it beat recently."""
    host, _, pid = (worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)  # signal 0: existence check only
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - last_seen < STALE_AFTER_SECONDS


def reap_stale_trials(study: optuna.Study) -> list[int]:
    """Fail trials left RUNNING by dead workers ("interrupted") and enqueue their parameters.

    A trial's last sign of life is its heartbeat, or its start while it has none yet: a trial
    another worker has just asked for is not stale merely because it has not written one. The
    re-queued trial keeps the user attributes that define it (a confirmation run's seed).
    """
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(CONTROL.worker)
        if worker == WORKER_ID:
            continue
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        last_seen = float(trial.user_attrs.get(CONTROL.heartbeat, started))
        if _worker_alive(worker, last_seen):
            continue
        try:
            # Not our trial, so the public Trial API cannot write to it: use the storage.
            study._storage.set_trial_user_attr(
                trial._trial_id, CONTROL.failure_reason, "interrupted"
            )
            study.tell(trial.number, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished meanwhile, or another worker reaped it first
        requeue(study, trial.number, trial.params, trial.user_attrs)
        reaped.append(trial.number)
    return reaped


#: User attributes that define what a queued trial is (the rest describe one attempt at it).
_DEFINING_ATTRS = (CONTROL.confirm_seed, CONTROL.source_trial, CONTROL.reference)


def requeue(
    study: optuna.Study, number: int, params: dict[str, object], attrs: dict[str, object]
) -> None:
    """Queue an interrupted trial again with the same parameters and defining attributes."""
    keep = {k: v for k, v in attrs.items() if k in _DEFINING_ATTRS}
    study.enqueue_trial(params, user_attrs={**keep, CONTROL.retry_of: number})


class Heartbeat:
    """Writes the worker's heartbeat into the trial every few seconds while it trains."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._trial.set_user_attr(CONTROL.heartbeat, time.time())
            except Exception:  # a finished trial or a storage hiccup: the next beat may work
                continue

    def __enter__(self) -> Heartbeat:
        self._trial.set_user_attr(CONTROL.heartbeat, time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
