"""Wraps every servicer method: gRPC metrics, and exceptions turned into status codes.

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

from service.errors import status_for
from service.metrics import Metrics, RpcMetrics

log = logging.getLogger(__name__)

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def instrument(
    servicer: object, metrics: Metrics, service_name: str, method_names: Iterable[str]
) -> SimpleNamespace:
    """An object with the servicer's methods, each wrapped by `instrumented`."""
    return SimpleNamespace(
        **{
            name: instrumented(getattr(servicer, name), metrics.rpc(service_name, name))
            for name in method_names
        }
    )


def instrumented(method: Handler, metrics: RpcMetrics) -> Handler:
    """`method` counted and timed, with its exceptions sent to the caller as status codes."""
    started = metrics.started
    handling_seconds = metrics.handling_seconds
    handled = metrics.handled
    ok = handled(grpc.StatusCode.OK)

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started.inc()
        begin = time.monotonic()
        try:
            response = await method(request, context)
        except asyncio.CancelledError:
            # The caller cancelled, or its deadline passed and gRPC already told it so.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            handled(
                grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            ).inc()
            handling_seconds.observe(time.monotonic() - begin)
            raise
        except Exception as exc:
            code, message = status_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.error("%s failed", method.__qualname__, exc_info=exc)
            handled(code).inc()
            handling_seconds.observe(time.monotonic() - begin)
            await context.abort(code, message)
        ok.inc()
        handling_seconds.observe(time.monotonic() - begin)
        return response

    return handler
