"""Wraps every servicer method: admission while draining, gRPC metrics, and exceptions turned
into status codes. `instrumented` wraps a unary method, `instrumented_stream` one whose
response is a stream.

This does the job of a server interceptor (as kserve's does) with a plain wrapper per method,
built once at start-up: an interceptor adds a handler lookup and a wrapper object to every
call, and the wrapper costs three metric updates.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from service.errors import ShuttingDown, status_for
from service.metrics import RpcMetrics

log = logging.getLogger(__name__)

Handler = Callable[[Any, grpc.ServicerContext], Any]
StreamHandler = Callable[[Any, grpc.ServicerContext], Iterator[Any]]


class InFlightRequests:
    """Counts the requests in the server; once draining, refuses new ones with UNAVAILABLE.

    A request counts from its admission until gRPC has finished it, its response sent: the
    batcher reads the count as its load signal, and a call still sending its response is load.
    A stream counts until it has ended. `draining` tells the streams to end before their next
    chunk, so that the drain does not wait for whole datasets.

    gRPC's own `server.stop(grace)` cancels calls that arrive during the grace period
    (CANCELLED, which clients do not retry); draining here first refuses them with
    UNAVAILABLE, which clients and load balancers retry elsewhere.
    """

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._changed = threading.Condition()

    def begin(self) -> None:
        """Admit one request, or raise ShuttingDown while draining."""
        with self._changed:
            if self.draining:
                raise ShuttingDown("the server is shutting down; retry on another replica")
            self.count += 1

    def end(self) -> None:
        """One admitted request is finished, its response sent."""
        with self._changed:
            self.count -= 1
            if self.draining and self.count == 0:
                self._changed.notify_all()

    def drain(self, timeout_seconds: float) -> bool:
        """Refuse new requests and wait for the admitted ones; False if some are still running
        after `timeout_seconds`."""
        with self._changed:
            self.draining = True
            return self._changed.wait_for(lambda: self.count == 0, timeout_seconds)


def _code_of_a_call_gone(context: grpc.ServicerContext) -> grpc.StatusCode:
    """Why a call ended before its answer: its deadline passed, or the caller cancelled."""
    remaining = context.time_remaining()
    expired = remaining is not None and remaining <= 0
    return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED


def _failure(
    exc: Exception, context: grpc.ServicerContext, name: str
) -> tuple[grpc.StatusCode, str]:
    """The status of a call whose method `name` raised `exc`; an unexpected error is logged."""
    if not context.is_active():  # The caller has its status from gRPC already.
        return _code_of_a_call_gone(context), "the call ended first"
    code, message = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("%s failed", name, exc_info=exc)
    return code, message


def _outcome_counter(metrics: RpcMetrics) -> Callable[[grpc.StatusCode, float], None]:
    """count(code, began): one call ended with `code`, having begun at `began`."""
    handling_seconds = metrics.handling_seconds
    handled = metrics.handled

    def count(code: grpc.StatusCode, began: float) -> None:
        handled(code).inc()
        handling_seconds.observe(time.monotonic() - began)

    return count


def instrumented(method: Handler, metrics: RpcMetrics, requests: InFlightRequests) -> Handler:
    """`method` admitted, counted and timed, with its exceptions sent to the caller as status
    codes. Every outcome is counted before the caller can see it: one that has its answer must
    find it in /metrics."""
    begin, end = requests.begin, requests.end
    started = metrics.started
    count = _outcome_counter(metrics)

    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        started.inc()
        began = time.monotonic()
        try:
            begin()
            # Runs once gRPC has finished the call, its status sent (at once if already so).
            if not context.add_callback(end):
                end()
            response = method(request, context)
        except Exception as exc:
            code, message = _failure(exc, context, method.__qualname__)
            count(code, began)
            context.abort(code, message)
        # The caller left while the answer was made: gRPC drops it.
        count(grpc.StatusCode.OK if context.is_active() else _code_of_a_call_gone(context),
              began)
        return response

    return handler


def instrumented_stream(
    method: StreamHandler, metrics: RpcMetrics, requests: InFlightRequests
) -> StreamHandler:
    """`method`, whose response is a stream of messages, admitted, counted and timed as
    `instrumented` does, from its first message to its status; its exceptions, raised at any
    message, sent to the caller as status codes.

    gRPC asks for the next message only once it has sent the last one, and stops asking when
    the caller has left (cancelled, or past its deadline): the stream is then closed where it
    waited, and counted as the caller's ending.
    """
    begin, end = requests.begin, requests.end
    started = metrics.started
    count = _outcome_counter(metrics)

    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started.inc()
        began = time.monotonic()
        try:
            begin()
            if not context.add_callback(end):
                end()
            yield from method(request, context)
        except GeneratorExit:
            count(_code_of_a_call_gone(context), began)
            raise
        except Exception as exc:
            code, message = _failure(exc, context, method.__qualname__)
            count(code, began)
            context.abort(code, message)
        count(grpc.StatusCode.OK if context.is_active() else _code_of_a_call_gone(context),
              began)

    return handler
