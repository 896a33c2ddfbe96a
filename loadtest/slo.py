"""Service-level objectives on a run's latencies: `p99=50ms,p50=10ms,average=20ms`."""

import re

from loadtest.config import ConfigError, parse_duration_s
from loadtest.report import Report, format_duration

_STATISTIC = re.compile(r"p(\d+(?:\.\d+)?)|average|slowest")


def parse_slos(text: str) -> tuple[tuple[str, float], ...]:
    """(statistic, limit in seconds) pairs from a comma-separated `statistic=duration` list.

    A statistic is a percentile `pN` (0 < N <= 100, over OK calls), `average` or `slowest`.
    """
    slos = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        statistic, equals, limit = item.partition("=")
        match = _STATISTIC.fullmatch(statistic.strip())
        if not equals or not match or (match[1] and not 0 < float(match[1]) <= 100):
            raise ConfigError(f"not an SLO: {item!r} (examples: p99=50ms, p50=5ms, average=10ms)")
        slos.append((statistic.strip(), parse_duration_s(limit)))
    return tuple(slos)


def measured_s(report: Report, statistic: str) -> float:
    """The value of `statistic` (`pN`, `average`, `slowest`) in `report`, in seconds."""
    if statistic == "average":
        return report.average_s
    if statistic == "slowest":
        return report.slowest_s
    return report.percentile_s(float(statistic.removeprefix("p")))


def missed_slos(report: Report) -> list[str]:
    """One line for each objective of the run's config that the run did not meet."""
    missed = []
    for statistic, limit_s in report.config.slos:
        value_s = measured_s(report, statistic)
        if value_s > limit_s or not report.ok_count:
            missed.append(
                f"SLO missed: {statistic} = {format_duration(value_s)} "
                f"> {format_duration(limit_s)}" + ("" if report.ok_count else " (no call ended OK)")
            )
    return missed
