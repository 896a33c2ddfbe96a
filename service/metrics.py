"""Every Prometheus metric the service exports, declared in one place.

The gRPC metrics carry the names and labels of go-grpc-prometheus, so Grafana's standard gRPC
dashboards work unchanged. Label children are created once and cached: the per-request cost is
one `inc`/`observe` on an object that already exists.

With several workers (service.supervisor) each worker's values go to files that the supervisor
sums into one /metrics (prometheus-client's multiprocess mode): counters and histograms add
up, `vae_queue_depth` is the sum over live workers, and the supervisor exports `vae_model_info`
and the `process_*` series itself, as multiprocess mode cannot.
"""

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# 100 µs to 10 s: from a lone small call to the longest deadline worth waiting; about three
# buckets per decade.
LATENCY_BUCKETS_SECONDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
BATCH_SIZE_BUCKETS_ROWS = tuple(float(2**i) for i in range(13))  # 1 .. 4096 rows


def grpc_code_label(code: grpc.StatusCode) -> str:
    """A status code as go-grpc-prometheus writes it: "OK", "InvalidArgument", "Canceled"."""
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"
    if code is grpc.StatusCode.OK:
        return "OK"
    return "".join(part.capitalize() for part in code.name.split("_"))


@dataclass(frozen=True)
class RpcMetrics:
    """The label children of one gRPC method."""

    started: Counter
    handling_seconds: Histogram
    handled: Callable[[grpc.StatusCode], Counter]


@dataclass(frozen=True)
class GraphMetrics:
    """The label children of one batcher (one ONNX graph)."""

    batch_size: Histogram
    queue_wait_seconds: Histogram
    inference_seconds: Histogram
    # Set by the batcher whenever its queue changes: with several workers every gauge lives in
    # a file the supervisor reads, and a function read at scrape time would never reach it.
    queue_depth: Gauge


class Metrics:
    """The service's metrics, registered in `registry` (a fresh one per server or test)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        rpc_labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            rpc_labels,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status.",
            (*rpc_labels, "grpc_code"),
            registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC's handler to its status, in seconds.",
            rpc_labels,
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "vae_batch_size",
            "Rows in each onnxruntime run.",
            ("graph",),
            buckets=BATCH_SIZE_BUCKETS_ROWS,
            registry=registry,
        )
        self.queue_wait_seconds = Histogram(
            "vae_queue_wait_seconds",
            "Time a request waited in the batcher's queue before its first rows ran.",
            ("graph",),
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "vae_inference_seconds",
            "Wall time of each onnxruntime run.",
            ("graph",),
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "vae_queue_depth",
            "Rows waiting in the batcher's queue.",
            ("graph",),
            registry=registry,
            # With several workers: the rows waiting in all the live ones.
            multiprocess_mode="livesum",
        )
        self.model_info = Info(
            "vae_model", "The model being served.", registry=registry
        )
        self.model_reload = Counter(
            "vae_model_reload_total",
            "Attempts to load a new model version while serving, by result.",
            ("result",),
            registry=registry,
        )
        # Both series exist from the start, so an alert on a failed roll-out sees 0 -> 1.
        for result in ("success", "failure"):
            self.model_reload.labels(result)

    def rpc(self, service: str, method: str, rpc_type: str = "unary") -> RpcMetrics:
        """The cached label children for one method."""
        labels = (rpc_type, service, method)
        by_code: dict[grpc.StatusCode, Counter] = {}

        def handled(code: grpc.StatusCode) -> Counter:
            child = by_code.get(code)
            if child is None:
                child = by_code[code] = self.handled.labels(*labels, grpc_code_label(code))
            return child

        return RpcMetrics(
            started=self.started.labels(*labels),
            handling_seconds=self.handling_seconds.labels(*labels),
            handled=handled,
        )

    def graph(self, graph: str) -> GraphMetrics:
        """The cached label children for one graph's batcher."""
        return GraphMetrics(
            batch_size=self.batch_size.labels(graph),
            queue_wait_seconds=self.queue_wait_seconds.labels(graph),
            inference_seconds=self.inference_seconds.labels(graph),
            queue_depth=self.queue_depth.labels(graph),
        )

    def set_model(self, name: str, version: str) -> None:
        """Record the model now being served."""
        self.model_info.info({"name": name, "version": version})
