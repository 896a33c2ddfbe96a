"""The supervisor's /metrics: every worker's series in one endpoint.

The workers' own metrics (service.metrics) are written to files in a directory shared with the
supervisor, which sums them at scrape time: prometheus-client's multiprocess mode. Counters and
histograms add up across workers (a dead worker's counts stay, so totals never go back);
`vae_queue_depth` sums the live workers. Multiprocess mode cannot carry info metrics or process
metrics, so the supervisor makes those itself: `vae_model_info` for each version a live worker
serves (two during a roll-out), and the `process_*` series of the supervisor and of each live
worker, told apart by a `process` label ("supervisor", "worker-0", ...), read from /proc.
"""

from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import PLATFORM_COLLECTOR, CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# (the `process` label, its pid)
ProcessList = Callable[[], Iterable[tuple[str, int]]]
# (model name, version) of each model a live worker serves
ModelList = Callable[[], Iterable[tuple[str, str]]]


def _process_collector(pid: int) -> ProcessCollector:
    """prometheus-client's collector of one process's /proc entries."""
    return ProcessCollector(pid=lambda: pid, registry=None)


class ProcessesCollector(Collector):
    """The standard `process_*` series of several processes, one `process` label each."""

    def __init__(self, processes: ProcessList) -> None:
        self._processes = processes

    def collect(self) -> Iterable[Metric]:
        """Read each process's /proc entries now; a process gone meanwhile is left out."""
        families: dict[str, Metric] = {}
        for label, pid in self._processes():
            for family in _process_collector(pid).collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "process": label},
                                      sample.value)
        return list(families.values())


class ModelInfoCollector(Collector):
    """`vae_model_info{name,version} 1` for each model a live worker serves."""

    def __init__(self, models: ModelList) -> None:
        self._models = models

    def collect(self) -> Iterable[Metric]:
        """The models served now."""
        family = InfoMetricFamily("vae_model", "The model being served.")
        for name, version in sorted(set(self._models())):
            family.add_metric([], {"name": name, "version": version})
        return [family]


def fleet_registry(
    multiprocess_dir: Path, processes: ProcessList, models: ModelList
) -> CollectorRegistry:
    """The registry the supervisor serves: the workers' files summed, the models they serve,
    the processes' own metrics and the Python platform."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiprocess_dir))
    for collector in (
        ProcessesCollector(processes), ModelInfoCollector(models), PLATFORM_COLLECTOR
    ):
        registry.register(collector)
    return registry
