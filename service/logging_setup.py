"""Log lines as text for people or JSON for log collectors, with structured fields either way.

Callers attach fields with `log.info("serving", extra=fields(grpc_port=50051))`; the text format
appends them as key=value, the JSON format puts them at the top level of the object.
"""

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

_FIELDS = "fields"


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """The `extra` argument that attaches `values` to a log record."""
    return {_FIELDS: values}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, fields, exception if any."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object."""
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`, time in UTC."""

    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as text, its fields appended as key=value."""
        text = super().format(record)
        extra = getattr(record, _FIELDS, None)
        if not extra:
            return text
        pairs = " ".join(f"{key}={json.dumps(value, default=str)}" for key, value in extra.items())
        head, newline, rest = text.partition("\n")
        return f"{head} {pairs}{newline}{rest}"


class _Context(logging.Filter):
    """Adds the same fields to every record, before the record's own."""

    def __init__(self, context: Mapping[str, Any]) -> None:
        super().__init__()
        self._context = dict(context)

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, _FIELDS, {**self._context, **getattr(record, _FIELDS, {})})
        return True


def configure_logging(
    log_format: str, level: str, context: Mapping[str, Any] | None = None
) -> None:
    """Send every logger's records to stderr in `log_format` ("text" or "json") at `level`,
    each with the fields of `context` (a worker's index, say)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if context:
        handler.addFilter(_Context(context))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
