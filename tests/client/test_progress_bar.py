"""The synthesize progress bar: rows, rate and time left; redrawn in place on a terminal, a line
now and then in a log."""

import io

from tests.fake_clock import FakeClock
from vae_client._progress import LOG_LINE_SECONDS, TERMINAL_REDRAW_SECONDS, ProgressBar


def test_a_log_gets_a_whole_line_now_and_then_and_one_at_the_end() -> None:
    clock, log = FakeClock(), io.StringIO()
    bar = ProgressBar(10_000, 0, log, interactive=False, clock=clock)
    clock.advance(LOG_LINE_SECONDS / 2)
    bar.update(1_000)
    assert log.getvalue() == ""
    clock.advance(LOG_LINE_SECONDS / 2)
    bar.update(2_000)
    clock.advance(1.0)
    bar.update(3_000)
    bar.close()
    assert log.getvalue().splitlines() == [
        "2,000 / 10,000 rows (20.0%)  400 rows/s  ETA 0:00:20",
        "3,000 / 10,000 rows (30.0%)  500 rows/s  ETA 0:00:14",
    ]


def test_a_terminal_line_is_redrawn_in_place_a_few_times_a_second() -> None:
    clock, terminal = FakeClock(), io.StringIO()
    bar = ProgressBar(1_000_000, 0, terminal, interactive=True, clock=clock)
    for step in range(1, 9):
        clock.advance(TERMINAL_REDRAW_SECONDS / 2)
        bar.update(step * 1000)
    assert terminal.getvalue().count("\r") == 4
    bar.close()
    assert terminal.getvalue().startswith("\r") and terminal.getvalue().endswith("\x1b[K\n")


def test_a_resumed_run_counts_its_rate_from_the_rows_it_fetched() -> None:
    clock = FakeClock()
    bar = ProgressBar(3_600_000, 1_800_000, io.StringIO(), interactive=False, clock=clock)
    assert bar.line() == "1,800,000 / 3,600,000 rows (50.0%)  -- rows/s  ETA --"
    clock.advance(10.0)
    bar.update(1_800_500)
    assert bar.line() == "1,800,500 / 3,600,000 rows (50.0%)  50 rows/s  ETA 9:59:50"
