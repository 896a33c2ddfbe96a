"""Wraps every servicer method: admission while draining, gRPC metrics, and exceptions turned
into status codes.

This does the job of a server interceptor (as kserve's does) with a plain wrapper per method,
built once at start-up: grpc.aio interceptors add an extra coroutine and handler lookup to
every call, and the wrapper costs three metric updates.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from types import SimpleNamespace
from typing import Any

import grpc

from service.errors import ShuttingDown, status_for
from service.metrics import Metrics, RpcMetrics

log = logging.getLogger(__name__)

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class InFlightRequests:
    """Counts the requests in the server; once draining, refuses new ones with UNAVAILABLE.

    A request counts from its admission until gRPC has finished it, its response sent: the
    batcher reads the count as its load signal, and a call still sending its response is load
    (on one core gRPC hands the loop the next call only after the last one's handler returned,
    so counting until then would find every call alone).

    gRPC's own `server.stop(grace)` cancels calls that arrive during the grace period
    (CANCELLED, which clients do not retry); draining here first refuses them with
    UNAVAILABLE, which clients and load balancers retry elsewhere.
    """

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._idle = asyncio.Event()

    def begin(self) -> None:
        """Admit one request, or raise ShuttingDown while draining."""
        if self.draining:
            raise ShuttingDown("the server is shutting down; retry on another replica")
        self.count += 1

    def end(self) -> None:
        """One admitted request is finished, its response sent."""
        self.count -= 1
        if self.draining and self.count == 0:
            self._idle.set()

    async def drain(self, timeout_seconds: float) -> bool:
        """Refuse new requests and wait for the admitted ones; False if some are still running
        after `timeout_seconds`."""
        self.draining = True
        if self.count == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_seconds)
        except TimeoutError:
            return False
        return True


def instrument(
    servicer: object,
    metrics: Metrics,
    requests: InFlightRequests,
    service_name: str,
    method_names: Iterable[str],
) -> Any:
    """An object with the servicer's methods, each wrapped by `instrumented` (it stands in for
    the servicer wherever one is expected)."""
    return SimpleNamespace(
        **{
            name: instrumented(
                getattr(servicer, name), metrics.rpc(service_name, name), requests
            )
            for name in method_names
        }
    )


def instrumented(method: Handler, metrics: RpcMetrics, requests: InFlightRequests) -> Handler:
    """`method` admitted, counted and timed, with its exceptions sent to the caller as status
    codes."""
    begin, end = requests.begin, requests.end
    started = metrics.started
    handling_seconds = metrics.handling_seconds
    handled = metrics.handled

    def finished(context: grpc.aio.ServicerContext) -> None:
        end()

    def count(code: grpc.StatusCode, began: float) -> None:
        handled(code).inc()
        handling_seconds.observe(time.monotonic() - began)

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started.inc()
        began = time.monotonic()
        try:
            begin()
            context.add_done_callback(finished)
            response = await method(request, context)
        except asyncio.CancelledError:
            # The caller cancelled, or its deadline passed and gRPC already told it so.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            count(grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED,
                  began)
            raise
        except Exception as exc:
            code, message = status_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.error("%s failed", method.__qualname__, exc_info=exc)
            # Counted before the status goes out: `abort` can send it to the caller before
            # returning, and a caller that has its answer must find it in /metrics.
            count(code, began)
            await context.abort(code, message)
        # A response goes out only once the handler has returned it, so counting here is in time.
        count(grpc.StatusCode.OK, began)
        return response

    return handler
