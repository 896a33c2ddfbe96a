"""The workers of a supervisor, and what it does when they report, die or it gets a signal.

`Fleet.run` starts `config.workers` workers (service.worker_process) and handles their events
and the supervisor's signals, one at a time on the main thread, until all have stopped:
- health: it tells every worker whether all are up, and logs `serving` (then `all workers
  serving` after a restart) once every worker has said SERVING;
- deaths: a worker that dies is started again after 0.5 s, doubling to 10 s; more than
  MAX_DEATHS deaths of one worker within DEATH_WINDOW_SECONDS, or any before all first served,
  stop every worker, and the exit status is 1;
- roll-outs: `model rolled out` once every live worker serves the same version again, with
  skew_seconds, the time two versions answered side by side;
- signals: SIGHUP is passed on; SIGTERM and SIGINT drain every worker.
"""

import logging
import os
import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from service.config import Config
from service.logging_setup import fields
from service.worker_process import Event, Report, Signalled, WorkerProcess

# The supervisor's lines, whichever of its modules writes them.
log = logging.getLogger("service.supervisor")

FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.5, 10.0
MAX_DEATHS, DEATH_WINDOW_SECONDS = 5, 60.0
# After the grace period, how long draining workers may take before they are killed.
KILL_AFTER_GRACE_SECONDS = 5.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The longest the main thread waits for an event. Its signal handlers run on it, between
# bytecodes, and a signal that trips while it sleeps (handed to another thread by the kernel,
# or landing just before it blocks) runs only once it wakes: as in service.server.
_SIGNAL_CHECK_SECONDS = 0.25


class Fleet:
    """Runs `config.workers` workers until told to stop; `run` returns the exit status."""

    def __init__(self, config: Config, worker_argv: Sequence[str], metrics_dir: Path) -> None:
        self.config = config
        self._argv = list(worker_argv)
        self._env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        self._metrics_dir = metrics_dir
        self._events: SimpleQueue[Event] = SimpleQueue()
        self._workers: list[WorkerProcess | None] = [None] * config.workers
        self._restart_at: dict[int, float] = {}
        self._deaths = [deque[float]() for _ in range(config.workers)]
        self._fleet_ready = False
        self._all_serving = False
        self._announce: dict[str, Any] | None = None  # the `serving` line's fields, until said
        self._rollout_began: float | None = None
        self._stopping = False
        self._kill_at: float | None = None
        self._status = 0

    def live(self) -> Iterator[WorkerProcess]:
        """The workers running now."""
        return (worker for worker in self._workers if worker is not None)

    def processes(self) -> list[tuple[str, int]]:
        """(metrics label, pid) of the supervisor and of every live worker."""
        return [("supervisor", os.getpid())] + [(w.label, w.pid) for w in self.live()]

    def models(self) -> list[tuple[str, str]]:
        """(name, version) of the model of every live worker that has reported one."""
        return [w.model for w in self.live() if w.model is not None]

    def run(self, announce: dict[str, Any]) -> int:
        """Start the workers and supervise them until they have all stopped; `announce`: the
        fields of the `serving` line, logged once every worker says SERVING."""
        self._announce = announce
        for signum in (*_STOP_SIGNALS, signal.SIGHUP):
            signal.signal(signum, lambda signum, frame: self._events.put(Signalled(signum)))
        try:
            for index in range(self.config.workers):
                self._start(index)
            while not (self._stopping and next(self.live(), None) is None):
                timers = [*self._restart_at.values(), self._kill_at or float("inf")]
                until_next_timer = min(timers) - time.monotonic()
                try:
                    event = self._events.get(
                        timeout=max(0.0, min(until_next_timer, _SIGNAL_CHECK_SECONDS))
                    )
                except Empty:
                    self._on_timers()
                    continue
                self._handle(event)
        finally:
            for signum in (*_STOP_SIGNALS, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
        return self._status

    def _start(self, index: int) -> None:
        worker = WorkerProcess(index, self._argv, self._env, self._events)
        self._workers[index] = worker
        log.info("worker starting", extra=fields(worker=index, pid=worker.pid))

    def _handle(self, event: Event) -> None:
        if isinstance(event, Signalled):
            self._on_signal(event.signum)
        elif self._workers[event.worker.index] is not event.worker:
            return  # a worker already replaced
        elif isinstance(event, Report):
            self._on_report(event.worker, event.message)
        else:
            self._on_exit(event.worker, event.status)

    def _on_report(self, worker: WorkerProcess, message: dict[str, Any]) -> None:
        kind = message.get("event")
        if kind == "ready":
            worker.ready = True
            worker.model = (str(message.get("model")), str(message.get("version")))
            self._note_versions()
            self._tell_fleet()
        elif kind == "model" and worker.model is not None:
            worker.model = (worker.model[0], str(message.get("version")))
            self._note_versions()
        elif kind == "health":
            worker.serving = bool(message.get("serving"))
            self._note_serving()

    def _tell_fleet(self) -> None:
        """Tell every worker whether all are up, when that changes."""
        ready = not self._stopping and all(w is not None and w.ready for w in self._workers)
        if ready != self._fleet_ready:
            self._fleet_ready = ready
            for worker in self.live():
                worker.tell(ready)

    def _note_serving(self) -> None:
        serving = all(w is not None and w.serving for w in self._workers)
        if serving and not self._all_serving and not self._stopping:
            pids = [w.pid for w in self.live()]
            if self._announce is not None:
                model_name, version = self.models()[0]
                log.info("serving", extra=fields(
                    model=model_name, model_version=version, workers=pids, **self._announce
                ))
                self._announce = None
            else:
                log.info("all workers serving", extra=fields(workers=pids))
        self._all_serving = serving

    def _note_versions(self) -> None:
        """Log when the live workers' versions start to differ, and when they agree again."""
        versions = {version for _, version in self.models()}
        if len(versions) > 1 and self._rollout_began is None:
            self._rollout_began = time.monotonic()
        elif (
            len(versions) == 1
            and self._rollout_began is not None
            and all(w.model is not None for w in self.live())
        ):
            log.info("model rolled out", extra=fields(
                model_version=versions.pop(),
                skew_seconds=round(time.monotonic() - self._rollout_began, 3),
            ))
            self._rollout_began = None

    def _on_exit(self, worker: WorkerProcess, status: int) -> None:
        self._workers[worker.index] = None
        worker.close()
        mark_process_dead(worker.pid, str(self._metrics_dir))
        if self._stopping:
            if status != 0:
                self._status = 1
            log.info("worker stopped", extra=fields(worker=worker.index, status=status))
            return
        self._tell_fleet()
        self._note_serving()
        now = time.monotonic()
        deaths = self._deaths[worker.index]
        deaths.append(now)
        while deaths[0] < now - DEATH_WINDOW_SECONDS:
            deaths.popleft()
        if self._announce is not None:
            log.error(f"cannot start: worker {worker.index} exited with status {status} "
                      "before every worker was serving")
            self._stop(1)
        elif len(deaths) > MAX_DEATHS:
            log.error(f"worker {worker.index} exited {len(deaths)} times within "
                      f"{DEATH_WINDOW_SECONDS:.0f} s, last with status {status}; stopping")
            self._stop(1)
        else:
            backoff = min(FIRST_BACKOFF_SECONDS * 2 ** (len(deaths) - 1), MAX_BACKOFF_SECONDS)
            self._restart_at[worker.index] = now + backoff
            log.warning("worker exited; restarting it", extra=fields(
                worker=worker.index, pid=worker.pid, status=status, restart_in_seconds=backoff
            ))

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            log.warning("already stopping; signal ignored", extra=fields(signal=name))
        elif signum == signal.SIGHUP:
            log.info("reloading every worker", extra=fields(signal=name))
            for worker in self.live():
                worker.signal(signal.SIGHUP)
        else:
            log.info("draining", extra=fields(
                signal=name, grace_seconds=self.config.grace_seconds,
                workers=[w.pid for w in self.live()],
            ))
            self._stop(0)

    def _stop(self, status: int) -> None:
        """Drain every worker (SIGTERM), start no more; exit with `status` or worse."""
        self._stopping = True
        self._status = max(self._status, status)
        self._restart_at.clear()
        self._kill_at = time.monotonic() + self.config.grace_seconds + KILL_AFTER_GRACE_SECONDS
        for worker in self.live():
            worker.signal(signal.SIGTERM)

    def _on_timers(self) -> None:
        now = time.monotonic()
        for index, due in list(self._restart_at.items()):
            if due <= now:
                del self._restart_at[index]
                self._start(index)
        if self._kill_at is not None and self._kill_at <= now:
            log.error("workers still running after the grace period; killed",
                      extra=fields(workers=[w.pid for w in self.live()]))
            self._kill_at = None
            self._status = 1
            for worker in self.live():
                worker.kill()
