"""The service's own exceptions, and the one place that turns exceptions into gRPC status codes.

Domain code raises these; `status_for` (used by service.instrumentation around every RPC) maps
them, so servicer methods carry no try/except. Anything unexpected becomes INTERNAL with a
generic message, and its traceback goes to the log instead of to the caller.
"""

import grpc


class ServiceError(Exception):
    """A request the service refuses; the message is meant for the caller."""


class InvalidArgument(ServiceError):
    """A request field is malformed; the message starts with the field's name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class QueueFull(ServiceError):
    """The batcher already holds as many rows as it may queue."""


class TooManyStreams(ServiceError):
    """The worker already runs as many SampleStreams as it may."""


class DeadlineExpired(ServiceError):
    """The caller's deadline passed while the request waited; it was never run."""


class CallerGone(ServiceError):
    """The caller cancelled the call while its request waited; it was never run."""


class ShuttingDown(ServiceError):
    """The server is draining and accepts no new work."""


INTERNAL_MESSAGE = "internal error; the server log has the details"

_STATUS_CODES: dict[type[BaseException], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    TooManyStreams: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    CallerGone: grpc.StatusCode.CANCELLED,
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-facing message for an exception raised while serving."""
    code = _STATUS_CODES.get(type(exc))
    if code is None:
        return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
    return code, str(exc)
