"""A progress bar of rows on stderr: rows done of the total, rows per second and the time left.

On a terminal it redraws one line in place a few times a second; elsewhere (a log, a pipe) it
writes a whole line now and then, so that a log is not flooded with redraws.
"""

import time
from collections.abc import Callable
from typing import TextIO

TERMINAL_REDRAW_SECONDS = 0.25
LOG_LINE_SECONDS = 5.0


class ProgressBar:
    """Reports `done` of `total` rows to `stream`, at most once per redraw interval.

    `done` may start above 0 (a resumed run); the rate and the time left count only the rows
    that came during this run.
    """

    def __init__(
        self,
        total: int,
        done: int,
        stream: TextIO,
        *,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total = total
        self._first = self._done = done
        self._stream = stream
        self._interactive = stream.isatty() if interactive is None else interactive
        self._interval = TERMINAL_REDRAW_SECONDS if self._interactive else LOG_LINE_SECONDS
        self._clock = clock
        self._started = self._last_shown = clock()

    def update(self, done: int) -> None:
        """Rows done so far; shown if the last report is old enough."""
        self._done = done
        if self._clock() - self._last_shown >= self._interval:
            self._show()

    def close(self) -> None:
        """Show the last count, and end the terminal's line."""
        self._show()
        if self._interactive:
            self._stream.write("\n")
            self._stream.flush()

    def line(self) -> str:
        """The report as it stands: rows, percentage, rate and time left."""
        elapsed = self._clock() - self._started
        fetched = self._done - self._first
        percent = 100.0 * self._done / self._total if self._total else 100.0
        text = f"{self._done:,} / {self._total:,} rows ({percent:.1f}%)"
        if elapsed <= 0 or fetched <= 0:
            return f"{text}  -- rows/s  ETA --"
        rate = fetched / elapsed
        left_seconds = round((self._total - self._done) / rate)
        minutes, seconds = divmod(left_seconds, 60)
        hours, minutes = divmod(minutes, 60)
        return f"{text}  {rate:,.0f} rows/s  ETA {hours}:{minutes:02}:{seconds:02}"

    def _show(self) -> None:
        self._last_shown = self._clock()
        if self._interactive:
            # Clears what is left of a longer line drawn before.
            self._stream.write(f"\r{self.line()}\x1b[K")
        else:
            self._stream.write(f"{self.line()}\n")
        self._stream.flush()
