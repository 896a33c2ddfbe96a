"""Run a load test from a RunConfig and return its Report: the library entry point.

    from loadtest import load_config, run
    report = run(load_config("loadtest/scenarios/sample-1.json", concurrency=32, total=5000))
    print(report.rps, report.percentile_s(99), report.cpu_s)

The method is described (from --proto or by reflection) and every request serialized in this
process; the load is then sent from `procs` processes (spawned, not forked: gRPC does not survive
a fork), which all start at the same monotonic instant and send back their samples.
"""

import asyncio
import datetime
import multiprocessing
import time
from multiprocessing.connection import Connection

from loadtest.config import RunConfig
from loadtest.descriptors import ResolvedMethod, resolve_by_reflection, resolve_from_proto
from loadtest.engine import Samples, Security, Share, connect, open_channels, run_share
from loadtest.payload import serialize_requests
from loadtest.report import Report


class WorkerError(RuntimeError):
    """A load process failed."""


# Children get this long to say they are connected before the common start.
_START_MARGIN_S = 0.05


def security_of(config: RunConfig) -> Security:
    """The connection settings of `config`."""
    return Security(config.insecure, config.cacert, config.cert, config.key, config.cname)


async def describe(config: RunConfig) -> ResolvedMethod:
    """The called method's descriptor, from the config's .proto file or by server reflection."""
    if config.proto:
        return resolve_from_proto(config.proto, config.import_paths, config.call)
    channel = await connect(config.host, security_of(config), config.connect_timeout_s)
    try:
        return await resolve_by_reflection(channel, config.call, config.connect_timeout_s)
    finally:
        await channel.close()


def split(config: RunConfig, method: ResolvedMethod, payloads: tuple[bytes, ...]) -> list[Share]:
    """The run cut into one share per process; concurrency and connections spread evenly."""
    procs = min(config.procs, config.concurrency)
    return [
        Share(
            target=config.host,
            security=security_of(config),
            path=method.path,
            payloads=payloads,
            concurrency=_part(config.concurrency, procs, index),
            connections=max(1, _part(config.connections, procs, index)),
            total=0 if config.duration_s else config.total,
            duration_s=config.duration_s,
            duration_stop=config.duration_stop,
            timeout_s=config.timeout_s,
            connect_timeout_s=config.connect_timeout_s,
            rps=config.rps,
            metadata=config.metadata,
            index=index,
            stride=procs,
            server_streaming=method.descriptor.server_streaming,
            stream_call_count=config.stream_call_count,
            stream_call_duration_s=config.stream_call_duration_s,
        )
        for index in range(procs)
    ]


def _part(amount: int, parts: int, index: int) -> int:
    return amount // parts + (1 if index < amount % parts else 0)


async def _run_here(share: Share) -> tuple[Samples, int, int]:
    channels = await open_channels(share)
    try:
        cpu_before = time.process_time()
        start_ns = time.monotonic_ns()
        samples = await run_share(share, channels, start_ns)
        end_ns = time.monotonic_ns()
        samples.cpu_s = time.process_time() - cpu_before
    finally:
        for channel in channels:
            await channel.close()
    return samples, start_ns, end_ns


def child_main(share: Share, pipe: Connection) -> None:
    """A worker process: connect, say so, wait for the common start, send, report back."""

    async def main() -> None:
        channels = await open_channels(share)
        try:
            pipe.send("ready")
            start_ns = pipe.recv()
            cpu_before = time.process_time()
            samples = await run_share(share, channels, start_ns)
            end_ns = time.monotonic_ns()
            samples.cpu_s = time.process_time() - cpu_before
            pipe.send((samples, end_ns))
        finally:
            for channel in channels:
                await channel.close()

    try:
        asyncio.run(main())
    except Exception as error:
        # The parent raises it: a worker's failure fails the run, with its reason. Sent as text,
        # because not every exception (gRPC's among them) survives pickling.
        pipe.send(WorkerError(f"load process {share.index}: {error}"))


def _answer(pipe: Connection):
    answer = pipe.recv()
    if isinstance(answer, Exception):
        raise answer
    return answer


def _run_in_children(shares: list[Share]) -> tuple[Samples, int, int]:
    context = multiprocessing.get_context("spawn")
    pipes, children = [], []
    for share in shares:
        ours, theirs = context.Pipe()
        child = context.Process(target=child_main, args=(share, theirs), daemon=True)
        child.start()
        pipes.append(ours)
        children.append(child)
    try:
        for pipe in pipes:
            _answer(pipe)
        start_ns = time.monotonic_ns() + int(_START_MARGIN_S * 1e9)
        for pipe in pipes:
            pipe.send(start_ns)
        results = [_answer(pipe) for pipe in pipes]
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.terminate()
    samples = Samples.merge([samples for samples, _ in results])
    return samples, start_ns, max(end_ns for _, end_ns in results)


def run(config: RunConfig) -> Report:
    """Run the load test `config` describes, and return its Report."""
    method = asyncio.run(describe(config))
    payloads = serialize_requests(method.descriptor, config.data)
    shares = split(config, method, payloads)
    if len(shares) == 1:
        samples, start_ns, end_ns = asyncio.run(_run_here(shares[0]))
    else:
        samples, start_ns, end_ns = _run_in_children(shares)
    wall_start_s = (time.time_ns() - (time.monotonic_ns() - start_ns)) / 1e9
    date = datetime.datetime.fromtimestamp(wall_start_s, datetime.UTC).astimezone()
    return Report(config, method.path, samples, start_ns, end_ns, date, len(shares))
