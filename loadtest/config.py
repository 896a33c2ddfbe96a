"""One run's settings, read from ghz's JSON config format and ghz's flags, in one typed object.

ghz's config keys (its runner.Config JSON tags) are read as ghz reads them: durations are Go
duration strings ("10s", "1m30s", "250ms"), paths are relative to the working directory, and a
flag given on the command line replaces the file's value. Keys that would change what is measured
but that this generator does not implement are refused rather than silently ignored.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

DEFAULT_CONCURRENCY = 50
DEFAULT_TOTAL = 200
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0

# What a timed run does with the calls in flight when its duration is up (ghz's --duration-stop):
# cut them and count them as failed, let them finish and count them, or cut them and leave them
# out of the report. ghz's default is "close".
DurationStop = Literal["close", "wait", "ignore"]
DURATION_STOPS: tuple[DurationStop, ...] = get_args(DurationStop)


class ConfigError(ValueError):
    """A setting that cannot be used: a bad value or a ghz feature this generator lacks."""


@dataclass(frozen=True)
class RunConfig:
    """Everything one load-test run needs. Units are in the names; 0 means "not set"."""

    call: str = ""  # required: __post_init__ names what is missing
    host: str = ""
    data: tuple[Mapping[str, Any], ...] = ({},)
    proto: str = ""
    import_paths: tuple[str, ...] = ()
    concurrency: int = DEFAULT_CONCURRENCY
    total: int = DEFAULT_TOTAL
    duration_s: float = 0.0  # when set, `total` is ignored, as in ghz
    duration_stop: DurationStop = "close"  # only read when duration_s is set
    timeout_s: float = DEFAULT_TIMEOUT_S  # per call; 0 is no deadline
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    connections: int = 1
    rps: float = 0.0  # when set: open loop, arrivals on a fixed schedule
    insecure: bool = False
    cacert: str = ""
    cert: str = ""
    key: str = ""
    cname: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    name: str = ""
    procs: int = 1
    slos: tuple[tuple[str, float], ...] = ()  # (statistic, limit in seconds), e.g. ("p99", 0.05)
    # A server-streaming call is cancelled (and counts as Canceled, as in ghz) once it has
    # received this many messages, or at its first message this long after it began; 0: never.
    stream_call_count: int = 0
    stream_call_duration_s: float = 0.0
    # Latency statistics over every call, not only the OK ones (ghz's --count-errors).
    count_errors: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.call:
            raise ConfigError('no method to call: give --call or "call" in the config')
        if not self.host:
            raise ConfigError('no host: give it as the argument or "host" in the config')
        for name in ("concurrency", "connections", "procs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.stream_call_count < 0:
            raise ConfigError("stream-call-count cannot be negative")
        if self.connections > self.concurrency:
            # As ghz refuses it: a connection without a worker would carry nothing.
            raise ConfigError(
                f"connections ({self.connections}) cannot be more than "
                f"concurrency ({self.concurrency})"
            )
        if self.duration_s <= 0 and self.total < 1:
            raise ConfigError("give a total of at least 1 request or a duration")
        durations = (self.duration_s, self.timeout_s, self.connect_timeout_s,
                     self.stream_call_duration_s)
        if min(*durations, self.rps) < 0:
            raise ConfigError("durations and rates cannot be negative")
        if self.duration_stop not in DURATION_STOPS:
            raise ConfigError(
                f"duration-stop must be one of {', '.join(DURATION_STOPS)}, "
                f"not {self.duration_stop!r}"
            )
        if bool(self.cert) != bool(self.key):
            raise ConfigError("--cert and --key go together")

    def with_overrides(self, **changes: Any) -> "RunConfig":
        """A copy with some settings replaced (the benchmark sweeps concurrency this way)."""
        return replace(self, **changes)


_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration_s(text: str | float | int) -> float:
    """Seconds in a Go duration string ("1m30s", "250ms", "0"); a bare number is seconds."""
    if isinstance(text, int | float):
        return float(text)
    value = text.strip()
    if value in ("0", ""):
        return 0.0
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise ConfigError(f"not a duration: {text!r} (examples: 10s, 250ms, 1m30s)")
    return sum(float(number) * _UNITS_S[unit] for number, unit in parts)


def normalize_data(data: Any) -> tuple[Mapping[str, Any], ...]:
    """ghz's call data: one JSON object, or a non-empty array of objects used round-robin."""
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) for item in items):
        raise ConfigError("call data must be a JSON object or a non-empty array of objects")
    if "{{" in json.dumps(items):
        raise ConfigError(
            "call data holds ghz template actions ({{...}}); this generator serializes each "
            "request once, so the data must be literal"
        )
    return tuple(items)


def read_data_file(path: str) -> tuple[Mapping[str, Any], ...]:
    """Call data from a JSON file (ghz's --data-file)."""
    try:
        return normalize_data(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read call data from {path}: {error}") from error


# ghz keys that only change how ghz prints or names things: accepted and not acted on.
_IGNORED_KEYS = {"format", "output", "cpus", "debug", "keepalive", "skipTLS", "authority"}
_IGNORED_KEYS |= {"enable-compression", "reflect-metadata", "skipFirst"}
# ghz regenerates the call data of each message a client-streaming call sends with it: this
# generator sends no client streams and refuses templated data, so it changes nothing here.
_IGNORED_KEYS |= {"stream-dynamic-messages"}
# ghz keys that are accepted only at the value that means "off" or "constant".
_DEFAULT_ONLY = {
    "load-schedule": "const",
    "concurrency-schedule": "const",
    "async": False,
    "protoset": "",
    "binary-file": "",
    "metadata-file": "",
    "max-duration": "0",
    "stream-interval": "0",
}


def settings_from_ghz(raw: Mapping[str, Any]) -> dict[str, Any]:
    """RunConfig keyword arguments from ghz config keys (from a file or from the flags)."""
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _DEFAULT_ONLY:
            if value not in (_DEFAULT_ONLY[key], None, 0, "0s"):
                raise ConfigError(f"ghz setting {key}={value!r} is not supported by vae-loadtest")
        elif key in ("call", "host", "proto", "cacert", "cert", "key", "cname", "name"):
            settings[key] = str(value)
        elif key == "insecure":
            settings[key] = bool(value)
        elif key in ("concurrency", "total", "connections", "procs"):
            settings[key] = int(value)
        elif key == "stream-call-count":
            settings["stream_call_count"] = int(value)
        elif key == "count-errors":
            settings["count_errors"] = bool(value)
        elif key == "rps":
            settings[key] = float(value)
        elif key in ("duration", "timeout", "connect-timeout", "stream-call-duration"):
            settings[key.replace("-", "_") + "_s"] = parse_duration_s(value)
        elif key == "duration-stop":
            settings["duration_stop"] = str(value).lower()  # ghz takes any case
        elif key == "import-paths":
            settings["import_paths"] = tuple(value)
        elif key == "data":
            settings["data"] = normalize_data(value)
        elif key == "data-file":
            settings["data"] = read_data_file(str(value))
        elif key == "metadata":
            settings["metadata"] = tuple((str(k), str(v)) for k, v in dict(value).items())
        elif key == "tags":
            settings["tags"] = {str(k): str(v) for k, v in dict(value).items()}
        elif key not in _IGNORED_KEYS:
            raise ConfigError(f"unknown ghz setting {key!r}")
    return settings


def read_ghz_config(path: str | Path) -> dict[str, Any]:
    """The settings of a ghz JSON config file."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read ghz config {path}: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"ghz config {path} must hold a JSON object")
    return settings_from_ghz(raw)


def load_config(path: str | Path, **overrides: Any) -> RunConfig:
    """A RunConfig from a ghz JSON config file, with some settings replaced."""
    return RunConfig(**{**read_ghz_config(path), **overrides})
