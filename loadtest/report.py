"""A run's results, computed as ghz computes them and printed in ghz's shapes.

As in ghz: the average is over every call; fastest, slowest, the histogram and the latency
distribution are over the calls that ended OK (over every call with `count_errors`, ghz's
--count-errors); a percentile is the nearest-rank value. Durations
in the JSON are integer nanoseconds, status codes carry Go's names ("OK", "Unimplemented").
Beyond ghz: the 99.9th percentile, and the client's own CPU time.
"""

import datetime
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from loadtest.config import RunConfig
from loadtest.engine import GO_CODE_NAMES, Samples

PERCENTILES = (10, 25, 50, 75, 90, 95, 99, 99.9)
HISTOGRAM_BUCKETS = 10


@dataclass
class Report:
    """The outcome of one run: every sample, and ghz's statistics over them."""

    config: RunConfig
    method_path: str
    samples: Samples
    start_ns: int  # monotonic
    end_ns: int  # monotonic
    date: datetime.datetime  # wall clock at the start, for display only
    procs: int

    @property
    def count(self) -> int:
        """Calls made."""
        return int(self.samples.latency_ns.size)

    @property
    def total_s(self) -> float:
        """Wall time of the run."""
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def rps(self) -> float:
        """Calls per second of wall time, OK or not."""
        return self.count / self.total_s if self.total_s > 0 else 0.0

    @property
    def average_s(self) -> float:
        """Mean latency over every call."""
        return float(self.samples.latency_ns.mean()) / 1e9 if self.count else 0.0

    @cached_property
    def latencies_s(self) -> np.ndarray:
        """The latencies the statistics are over, sorted, in seconds: the OK calls', or with
        `count_errors` every call's."""
        counted = self.samples.latency_ns
        if not self.config.count_errors:
            counted = counted[self.samples.status == 0]
        return np.sort(counted) / 1e9

    @property
    def ok_count(self) -> int:
        """Calls that ended OK."""
        return int(np.count_nonzero(self.samples.status == 0))

    @property
    def fastest_s(self) -> float:
        """Shortest counted latency (0 without any)."""
        return float(self.latencies_s[0]) if self.latencies_s.size else 0.0

    @property
    def slowest_s(self) -> float:
        """Longest counted latency (0 without any)."""
        return float(self.latencies_s[-1]) if self.latencies_s.size else 0.0

    @property
    def cpu_s(self) -> float:
        """User+system CPU time the client's processes spent sending the load."""
        return self.samples.cpu_s

    @property
    def open_loop(self) -> bool:
        """Whether arrivals followed a fixed schedule (latency from the intended send time)."""
        return self.config.rps > 0

    def percentile_s(self, percentage: float) -> float:
        """Nearest-rank percentile of the counted latencies, as ghz computes it (0 without
        data)."""
        count = self.latencies_s.size
        if not count:
            return 0.0
        rank = round(percentage * count / 100, 9)
        index = int(rank) - 1 if rank == int(rank) else int(rank)
        return float(self.latencies_s[max(index, 0)])

    @cached_property
    def status_counts(self) -> dict[str, int]:
        """Calls per status code, by Go's code names."""
        codes, counts = np.unique(self.samples.status, return_counts=True)
        return {GO_CODE_NAMES[int(c)]: int(n) for c, n in zip(codes, counts, strict=True)}

    @cached_property
    def error_counts(self) -> dict[str, int]:
        """Calls per error text, for the calls that did not end OK."""
        ids, counts = np.unique(self.samples.error[self.samples.error >= 0], return_counts=True)
        return {self.samples.errors[int(i)]: int(n) for i, n in zip(ids, counts, strict=True)}

    @property
    def not_ok_count(self) -> int:
        """Calls that did not end OK."""
        return self.count - self.ok_count

    def histogram(self) -> list[tuple[float, int, float]]:
        """ghz's histogram of the counted latencies: (bucket mark in s, count, frequency), 11
        rows."""
        latencies = self.latencies_s
        if not latencies.size:
            return []
        fastest, slowest = latencies[0], latencies[-1]
        step = (slowest - fastest) / HISTOGRAM_BUCKETS
        marks = np.append(fastest + step * np.arange(HISTOGRAM_BUCKETS), slowest)
        at_or_below = np.searchsorted(latencies, marks, side="right")
        counts = np.diff(at_or_below, prepend=0)
        return [
            (float(mark), int(n), int(n) / latencies.size)
            for mark, n in zip(marks, counts, strict=True)
        ]

    def to_ghz_json(self, details: bool = True) -> dict[str, Any]:
        """The report under ghz's JSON field names (durations in nanoseconds), plus our extras."""
        config = self.config
        result: dict[str, Any] = {
            "name": config.name or None,
            "endReason": "timeout" if config.duration_s else "normal",
            "options": {
                "call": config.call,
                "host": config.host,
                "proto": config.proto or None,
                "import-paths": list(config.import_paths) or None,
                "insecure": config.insecure,
                "rps": config.rps or None,
                "concurrency": config.concurrency,
                "total": None if config.duration_s else config.total,
                "connections": config.connections,
                "duration": _ns(config.duration_s) or None,
                "timeout": _ns(config.timeout_s) or None,
                "data": list(config.data) if len(config.data) > 1 else config.data[0],
                "metadata": dict(config.metadata) or None,
                "stream-call-count": config.stream_call_count or None,
                "stream-call-duration": _ns(config.stream_call_duration_s) or None,
                "count-errors": config.count_errors or None,
                "CPUs": self.procs,
            },
            "date": self.date.isoformat(timespec="seconds"),
            "count": self.count,
            "total": _ns(self.total_s),
            "average": _ns(self.average_s),
            "fastest": _ns(self.fastest_s),
            "slowest": _ns(self.slowest_s),
            "rps": self.rps,
            "errorDistribution": self.error_counts,
            "statusCodeDistribution": self.status_counts,
            "latencyDistribution": [
                {"percentage": p, "latency": _ns(self.percentile_s(p))}
                for p in PERCENTILES
                if self.latencies_s.size
            ],
            "histogram": [
                {"mark": mark, "count": n, "frequency": frequency}
                for mark, n, frequency in self.histogram()
            ],
            "tags": dict(config.tags) or None,
            "openLoop": self.open_loop,
            "clientProcesses": self.procs,
            "clientCpuSeconds": self.cpu_s,
        }
        if details:
            result["details"] = self._details()
        result["options"] = {k: v for k, v in result["options"].items() if v is not None}
        return {k: v for k, v in result.items() if v is not None}

    def _details(self) -> list[dict[str, Any]]:
        samples = self.samples
        wall_start_ns = int(self.date.timestamp() * 1e9)
        errors = [*samples.errors, ""]
        return [
            {
                "timestamp": _rfc3339_nano(wall_start_ns + int(start) - self.start_ns),
                "latency": int(latency),
                "error": errors[int(error)],
                "status": GO_CODE_NAMES[int(status)],
            }
            for start, latency, error, status in zip(
                samples.start_ns, samples.latency_ns, samples.error, samples.status, strict=True
            )
        ]

    def summary_text(self) -> str:
        """The report in the shape of ghz's default "summary" output."""
        lines = ["", "Summary:"]
        if self.config.name:
            lines.append(f"  Name:\t\t{self.config.name}")
        lines += [
            f"  Count:\t{self.count}",
            f"  Total:\t{format_duration(self.total_s)}",
            f"  Slowest:\t{format_duration(self.slowest_s)}",
            f"  Fastest:\t{format_duration(self.fastest_s)}",
            f"  Average:\t{format_duration(self.average_s)}",
            f"  Requests/sec:\t{self.rps:4.2f}",
            f"  Client CPU:\t{self.cpu_s:.2f} s user+sys in {self.procs} process(es), "
            f"{self.cpu_s / self.total_s if self.total_s else 0:.2f} cores",
        ]
        if self.open_loop:
            lines.append(
                f"  Open loop:\t{self.config.rps:g} arrivals/s, latency from the intended send time"
            )
        lines += ["", "Response time histogram:", *self._histogram_lines(), ""]
        lines.append("Latency distribution:")
        lines += [
            f"  {p:g} % in {format_duration(self.percentile_s(p))} "
            for p in PERCENTILES
            if self.latencies_s.size
        ]
        lines.append("")
        if self.status_counts:
            lines.append("Status code distribution:")
            counts = self.status_counts.items()
            lines += _table([f"[{code}]", f"{n} responses"] for code, n in counts)
        if self.error_counts:
            lines += ["", "Error distribution:"]
            lines += _table([f"[{n}]", text] for text, n in self.error_counts.items())
        return "\n".join(lines) + "\n"

    def _histogram_lines(self) -> list[str]:
        rows = self.histogram()
        if not rows:
            return []
        marks = [f"{mark * 1000:.3f}" for mark, _, _ in rows]
        counts = [str(n) for _, n, _ in rows]
        most = max(n for _, n, _ in rows)
        mark_width, count_width = max(map(len, marks)), max(map(len, counts))
        return [
            f"  {mark:<{mark_width}} [{count}]{' ' * (count_width - len(count))} |"
            + "∎" * ((n * 40 + most // 2) // most if most else 0)
            for mark, count, (_, n, _) in zip(marks, counts, rows, strict=True)
        ]


def format_duration(seconds: float) -> str:
    """A duration as ghz prints one: ns below 10 µs, else ms below 1 s, else s."""
    nanoseconds = round(seconds * 1e9)
    if nanoseconds < 10_000:
        return f"{nanoseconds} ns"
    if nanoseconds < 1e9:
        return f"{nanoseconds / 1e6:4.2f} ms"
    return f"{nanoseconds / 1e9:4.2f} s"


def _table(rows) -> list[str]:
    rows = list(rows)
    width = max(len(first) for first, _ in rows)
    return [f"  {first:<{width}}   {second}" for first, second in rows]


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _rfc3339_nano(wall_ns: int) -> str:
    seconds, nanoseconds = divmod(wall_ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanoseconds:09d}Z"
