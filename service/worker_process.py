"""The supervisor's handle on one worker process (service.worker): start it, hear it, tell it.

A worker is started as a fresh interpreter, `python -m service.worker`, in a process group of
its own, so that a terminal's Ctrl-C reaches only the supervisor, which passes it on. What the
worker reports, and its exit, arrive as events on the supervisor's queue, from one thread per
worker; the supervisor's main thread handles them one at a time.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any

from service.worker import NOT_SERVING, SERVING


@dataclass(frozen=True)
class Report:
    """A message from a worker: `ready`, `model` (a swap) or `health`."""

    worker: "WorkerProcess"
    message: dict[str, Any]


@dataclass(frozen=True)
class Exited:
    """A worker's process ended with `status` (negative: killed by that signal)."""

    worker: "WorkerProcess"
    status: int


@dataclass(frozen=True)
class Signalled:
    """The supervisor received a signal."""

    signum: int


Event = Report | Exited | Signalled


class WorkerProcess:
    """One worker: its process, and what it last reported."""

    def __init__(
        self,
        index: int,
        service_argv: Sequence[str],
        env: Mapping[str, str],
        events: "SimpleQueue[Event]",
    ) -> None:
        self.index = index
        self.ready = False
        self.serving = False
        self.model: tuple[str, str] | None = None  # (name, version)
        read_fd, write_fd = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "service.worker", "--index", str(index),
                 "--report-fd", str(write_fd), *service_argv],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
                env=dict(env),
                text=True,
                process_group=0,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.pid = self._process.pid
        threading.Thread(
            target=self._listen, args=(read_fd, events), name=f"worker-{index}", daemon=True
        ).start()

    @property
    def label(self) -> str:
        """The worker's name in metrics: worker-<index>."""
        return f"worker-{self.index}"

    def _listen(self, read_fd: int, events: "SimpleQueue[Event]") -> None:
        """Queue each report until the pipe closes, then the exit status."""
        with os.fdopen(read_fd) as reports:
            for line in reports:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    events.put(Report(self, message))
        events.put(Exited(self, self._process.wait()))

    def tell(self, serving: bool) -> None:
        """Tell the worker whether every worker is up (its health follows)."""
        self._write(SERVING if serving else NOT_SERVING)

    def _write(self, line: str) -> None:
        stdin = self._process.stdin
        try:
            if stdin is not None:
                stdin.write(line + "\n")
                stdin.flush()
        except (OSError, ValueError):
            pass  # It has exited or is exiting: its Exited event is on the way.

    def signal(self, signum: int) -> None:
        """Send `signum` to the worker if it is still running."""
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the worker."""
        self.signal(signal.SIGKILL)

    def close(self) -> None:
        """Close the worker's stdin once it has exited."""
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
