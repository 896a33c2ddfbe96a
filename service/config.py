"""The service's configuration: one frozen object, built once at start-up from flags and `VAE_*`.

Every field is a flag `--<name-with-dashes>` and an environment variable `VAE_<NAME>`; a flag
wins over the variable, the variable over the default. No other module reads the environment.
gRPC's own variables (GRPC_ENVIRONMENT) are defaulted here too, before gRPC loads.
"""

import argparse
import dataclasses
import math
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "VAE_"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIB = 1024 * 1024
MAX_UINT64 = 2**64 - 1
# SampleStreamRequest.count: "1..max_stream_rows (GetModelInfo, at least 10^8)".
MIN_STREAM_ROWS = 10**8

# gRPC's own settings, given to it through its environment unless the operator set them. gRPC
# reads them once, when it loads: `set_grpc_environment` must run before the first `import grpc`.
# GRPC_EXPERIMENTS=-event_engine_listener keeps grpcio's server connections on its previous I/O
# path, read and written by the thread that already polls for gRPC's events, instead of handing
# each read and write to EventEngine threads first. gRPC names this variable as the switch for
# that experiment. The service on one core (make bench's set-up), one-image Sample: at 32
# callers 13 % less CPU per call and 14 % more calls/s; a lone caller's median 6 % lower.
# Measured with grpcio 1.85: re-measure when grpcio is upgraded.
GRPC_ENVIRONMENT = {"GRPC_EXPERIMENTS": "-event_engine_listener"}


class ConfigError(ValueError):
    """A setting has a value the service cannot run with; the message names the variable."""


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota if any."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus or 1, max(1, math.ceil(quota)))
    return max(1, cpus or 1)


def _cgroup_cpu_quota() -> float | None:
    """CPUs granted by a cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`, None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else quota_us / period_us


def _setting(default: Any, help: str) -> Any:
    if callable(default):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    """The effective settings of one server process."""

    host: str = _setting("0.0.0.0", "Address the gRPC and metrics servers listen on.")
    grpc_port: int = _setting(50051, "gRPC port; 0 picks a free one (logged at start-up).")
    metrics_port: int = _setting(9090, "Prometheus /metrics port; 0 picks a free one.")
    model_dir: Path = _setting(
        Path("models/vae-mnist"),
        "Directory of numbered model versions; the highest number is served.",
    )
    # onnxruntime's rows/s on these graphs peaks near 1024 rows (make bench's compute limit),
    # and a request up to that size then runs in one piece. Requests run in arrival order, so
    # a smaller cap would not let a small request pass a large one, only split the large one.
    max_batch_size: int = _setting(1024, "Most rows in one onnxruntime run.")
    max_delay_ms: float = _setting(
        2.0,
        "Under load only: how long a partial batch may wait to fill, counted from its oldest "
        "request (it closes sooner when arrivals pause). An idle server never waits; 0: never.",
    )
    max_queue: int = _setting(
        16384, "Rows waiting per graph; beyond it requests get RESOURCE_EXHAUSTED at once."
    )
    max_request_rows: int = _setting(4096, "Largest count (Sample) or N (tensors) per request.")
    # A stream's count is the size of the dataset it describes, not what the server holds:
    # rows are made chunk by chunk, so this bounds only how long one stream may run.
    max_stream_rows: int = _setting(
        10**9, "Largest count of one SampleStream, in rows; at least 10^8."
    )
    # As large as a full batch, so a stream's chunk runs in one onnxruntime call.
    max_chunk_rows: int = _setting(
        1024, "Largest rows per SampleStream chunk; also the default chunk size."
    )
    # The batcher runs rows in arrival order: a unary call queued behind a stream waits for the
    # piece the stream queued ahead of it. Smaller pieces cost the stream more hand-offs.
    stream_piece_rows: int = _setting(
        256,
        "Rows of a SampleStream chunk that join the decoder's queue at a time; smaller pieces "
        "let unary calls in sooner. VAE_MAX_CHUNK_ROWS or more: whole chunks.",
    )
    # A stream holds a handler thread from its first chunk to its last, also while its reader
    # stalls; without a cap, enough streams would leave no thread for unary calls.
    max_streams: int = _setting(
        8,
        "SampleStreams one worker runs at once; further ones get RESOURCE_EXHAUSTED. Below "
        "VAE_HANDLER_THREADS, so that unary calls always keep threads.",
    )
    handler_threads: int = _setting(
        32,
        "Threads that run calls; also the most calls a batch can gather. Further calls wait "
        "in gRPC's queue for a free thread.",
    )
    workers: int = _setting(
        0,
        "Server processes sharing the gRPC port (SO_REUSEPORT), under one supervisor; 0 or "
        "unset: the CPUs this process may use. 1: a single process, no supervisor.",
    )
    intra_op_threads: int = _setting(
        0,
        "onnxruntime threads per graph in each worker; 0 or unset: the CPUs this process may "
        "use, divided among the workers.",
    )
    log_format: str = _setting("text", "Log line format: text or json.")
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING or ERROR.")
    grace_seconds: float = _setting(
        15.0,
        "On SIGTERM, how long in-flight requests may take to finish; keep it below the "
        "pod's terminationGracePeriodSeconds.",
    )
    max_message_bytes: int = _setting(
        32 * MIB, "Largest request or response message, in bytes."
    )
    reflection: bool = _setting(True, "Offer gRPC server reflection (grpcurl, ghz).")
    tls_cert_file: Path | None = _setting(None, "PEM server certificate chain; enables TLS.")
    tls_key_file: Path | None = _setting(None, "PEM private key of the server certificate.")
    tls_client_ca_file: Path | None = _setting(
        None, "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."
    )
    model_poll_seconds: float = _setting(
        0.0, "Seconds between looks for a newer model version; 0: off (SIGHUP still reloads)."
    )

    def __post_init__(self) -> None:
        # 0 stands for the computed default, so the object always holds the effective value.
        if self.workers == 0:
            object.__setattr__(self, "workers", available_cpus())
        if self.intra_op_threads == 0 and self.workers > 0:
            object.__setattr__(self, "intra_op_threads", max(1, available_cpus() // self.workers))
        for name in ("grpc_port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{env_name(name)} must be a port number 0..65535")
        for name in (
            "max_batch_size", "max_queue", "max_request_rows", "workers", "intra_op_threads",
            "handler_threads", "max_stream_rows", "max_chunk_rows", "max_streams",
            "stream_piece_rows",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{env_name(name)} must be at least 1")
        for name in ("max_delay_ms", "grace_seconds", "model_poll_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{env_name(name)} must be a finite number >= 0")
        if self.max_queue < self.max_request_rows:
            raise ConfigError(
                f"{env_name('max_queue')} ({self.max_queue}) must be at least "
                f"{env_name('max_request_rows')} ({self.max_request_rows}), "
                "or the largest requests could never be queued"
            )
        if self.max_queue < self.max_chunk_rows:
            raise ConfigError(
                f"{env_name('max_queue')} ({self.max_queue}) must be at least "
                f"{env_name('max_chunk_rows')} ({self.max_chunk_rows}), "
                "or the largest stream chunks could never be queued"
            )
        if self.max_streams >= self.handler_threads:
            raise ConfigError(
                f"{env_name('max_streams')} ({self.max_streams}) must be below "
                f"{env_name('handler_threads')} ({self.handler_threads}), or streams could "
                "take every thread and leave none for unary calls"
            )
        if not MIN_STREAM_ROWS <= self.max_stream_rows <= MAX_UINT64:
            raise ConfigError(
                f"{env_name('max_stream_rows')} must be between {MIN_STREAM_ROWS} (vae.proto "
                f"promises callers streams of that many rows) and {MAX_UINT64}"
            )
        if self.largest_message_bytes() > self.max_message_bytes:
            raise ConfigError(
                f"{env_name('max_message_bytes')} ({self.max_message_bytes}) is below the "
                f"{self.largest_message_bytes()} bytes a message of "
                f"{max(self.max_request_rows, self.max_chunk_rows)} float32 images needs "
                f"({env_name('max_request_rows')}, {env_name('max_chunk_rows')})"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"{env_name('log_format')} must be one of {', '.join(LOG_FORMATS)}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"{env_name('log_level')} must be one of {', '.join(LOG_LEVELS)}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError(
                f"{env_name('tls_cert_file')} and {env_name('tls_key_file')} go together"
            )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError(
                f"{env_name('tls_client_ca_file')} needs {env_name('tls_cert_file')} as well"
            )

    def largest_message_bytes(self) -> int:
        """Bytes of the largest valid message: a request's or a stream chunk's most float32
        MNIST images, + framing."""
        return max(self.max_request_rows, self.max_chunk_rows) * 784 * 4 + 4096

    @property
    def tls(self) -> bool:
        """Whether the gRPC port speaks TLS."""
        return self.tls_cert_file is not None

    def as_log_fields(self) -> dict[str, Any]:
        """The settings as plain values, for the start-up log line."""
        return {
            f.name: (str(v) if isinstance(v, Path) else v)
            for f in dataclasses.fields(self)
            for v in (getattr(self, f.name),)
        }


def set_grpc_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Give gRPC each GRPC_ENVIRONMENT setting the environment lacks; the values now in force.

    Only takes effect before gRPC is first imported in this process.
    """
    environ = os.environ if environ is None else environ
    return {name: environ.setdefault(name, value) for name, value in GRPC_ENVIRONMENT.items()}


def env_name(field_name: str) -> str:
    """The environment variable of a setting, e.g. `VAE_MAX_BATCH_SIZE`."""
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    """The command-line flag of a setting, e.g. `--max-batch-size`."""
    return "--" + field_name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parser_for(annotation: Any) -> Any:
    """The function turning a flag or variable's text into the field's type."""
    return {
        int: int,
        float: float,
        bool: _parse_bool,
        str: str,
        Path: Path,
    }.get(annotation, lambda text: Path(text) if text else None)


def _default_text(f: "dataclasses.Field[Any]") -> str:
    if f.default is dataclasses.MISSING:
        return "computed at start-up"
    return str(f.default)


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the VAE over gRPC. Every flag also reads VAE_<FLAG> from the "
        "environment.",
    )
    for f in dataclasses.fields(Config):
        parser.add_argument(
            flag_name(f.name),
            dest=f.name,
            default=None,
            metavar=env_name(f.name),
            help=f"{f.metadata['help']} (default: {_default_text(f)})",
        )
    return parser


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Build the Config from command-line flags, then `VAE_*` variables, then defaults.

    A `workers` or `intra_op_threads` of 0 means the computed default (Config.__post_init__).
    Raises ConfigError naming the variable when a value is invalid.
    """
    environ = os.environ if environ is None else environ
    flags = vars(_argument_parser().parse_args(argv))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        text = flags[f.name]
        if text is None:
            text = environ.get(env_name(f.name))
        if text is None:
            continue
        try:
            values[f.name] = _parser_for(f.type)(text)
        except ValueError as exc:
            raise ConfigError(f"{env_name(f.name)}={text!r} is not valid: {exc}") from None
    if "log_level" in values:
        values["log_level"] = values["log_level"].upper()
    return Config(**values)
