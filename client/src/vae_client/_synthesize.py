"""`vae-client synthesize`: a dataset of synthetic digits into a .npy file, with SampleStream.

Each target serves one shard, a contiguous run of the rows still missing, over a connection and
a thread of its own; all shards write into the one file (DatasetFile). Row i is a function of
(model version, seed, temperature, i) alone, so the file's bytes are the same however the rows
were split over targets, resumed or interrupted. On Ctrl-C, SIGTERM or an error the rows written
so far are flushed and recorded, and `--resume` fetches only the others.
"""

import argparse
import json
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import grpc

from vae_client._channel import at_least_one
from vae_client._client import VAEClient
from vae_client._dataset_file import (
    DatasetFile,
    DatasetParameters,
    ResumeRefused,
    Span,
    float32_temperature,
    progress_path,
)
from vae_client._progress import ProgressBar
from vae_client._stream import ModelVersionChanged, StreamChunk

# How often the progress file records the rows written; also when a span is done.
CHECKPOINT_SECONDS = 2.0
# How often the waiting thread looks at the shards, to report progress.
POLL_SECONDS = 0.1
# How long to wait for the shards to stop once their streams are cancelled.
STOP_SECONDS = 2.0


class IncompleteDataset(RuntimeError):
    """The streams ended without error before every row was written."""


class _Interrupted(BaseException):
    """SIGINT or SIGTERM, raised in the main thread (a BaseException like KeyboardInterrupt, so
    that no `except Exception` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def add_synthesize_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `synthesize` command and its options."""
    command = commands.add_parser(
        "synthesize",
        help="write a dataset of synthetic digits to a .npy file; resumable and shardable",
        description="Write COUNT digits from the prior to OUT, a .npy array (COUNT, 28, 28), "
        "with a progress bar on stderr. Row i depends only on the model version, seed, "
        "temperature and i: the file is the same however it was split over targets, "
        "resumed or interrupted. A JSON summary is printed at the end.",
    )
    command.add_argument("--out", type=Path, required=True, help="the .npy file to write")
    command.add_argument("--count", type=at_least_one, help="rows in the dataset")
    command.add_argument("--seed", type=int, help="the dataset's seed (default: a random one)")
    command.add_argument("--temperature", type=float, help="scales the prior's spread (1.0)")
    command.add_argument(
        "--dtype", choices=("float32", "uint8"), help="element type of the file (float32)"
    )
    command.add_argument(
        "--target", dest="targets", action="append", metavar="HOST:PORT",
        help="a server; repeat to split the rows over several, one connection each "
        "(default: the --target given before the command)",
    )
    command.add_argument(
        "--resume", action="store_true",
        help="continue OUT where an interrupted run left it (start it if it does not exist); "
        "the parameters default to the ones it was begun with",
    )
    command.add_argument("--chunk-rows", type=int, default=0,
                         help="rows per streamed chunk (default: the server's largest)")
    command.add_argument("--resume-attempts", type=int, default=6,
                         help="times a dropped stream is opened again before giving up")


def synthesize_command(
    args: argparse.Namespace, targets: Sequence[str], connect: Callable[[str], VAEClient]
) -> int:
    """Run `synthesize` as `args` say over `targets`, each reached with `connect`; returns the
    exit status. Prints the JSON summary; errors and progress go to stderr."""
    try:
        dataset = _open_dataset(args, len(targets))
    except (ResumeRefused, OSError) as error:
        print(f"vae-client: {error}", file=sys.stderr)
        return 1
    bar = ProgressBar(dataset.parameters.count, dataset.rows_done, sys.stderr)
    rows_at_start, started = dataset.rows_done, time.monotonic()
    clients = [connect(target) for target in targets]
    try:
        with _signals_raise_interrupted():
            synthesize(dataset, clients, chunk_rows=args.chunk_rows,
                       resume_attempts=args.resume_attempts, on_progress=bar.update)
    except (_Interrupted, grpc.RpcError, ResumeRefused, ModelVersionChanged,
            IncompleteDataset) as error:
        bar.close()
        print(f"vae-client: {_describe(error)}", file=sys.stderr)
        print(f"vae-client: {dataset.rows_done:,} of {dataset.parameters.count:,} rows are in "
              f"{dataset.path}; rerun with --resume to fetch the rest", file=sys.stderr)
        return 128 + error.signum if isinstance(error, _Interrupted) else 1
    bar.close()
    dataset.complete()
    seconds = time.monotonic() - started
    fetched = dataset.parameters.count - rows_at_start
    print(json.dumps({
        "out": str(dataset.path),
        "rows": dataset.parameters.count,
        "fetched_rows": fetched,
        "dtype": dataset.parameters.dtype,
        "seed": dataset.parameters.seed,
        "temperature": dataset.parameters.temperature,
        "model_version": dataset.model_version,
        "seconds": round(seconds, 3),
        "rows_per_second": round(fetched / seconds) if seconds > 0 else None,
    }, indent=2))
    return 0


def synthesize(
    dataset: DatasetFile,
    clients: Sequence[VAEClient],
    *,
    chunk_rows: int = 0,
    resume_attempts: int = 6,
    on_progress: Callable[[int], None] = lambda rows_done: None,
) -> None:
    """Fetch the rows `dataset` lacks, shard k with clients[k], reporting the rows done to
    `on_progress` as they come. However it ends, the rows written are recorded in the progress
    file, and the clients are closed (which cancels their streams). The first error of a shard
    (grpc.RpcError, ResumeRefused for another model version, ...) stops the others and is
    raised, as is an exception of this thread such as KeyboardInterrupt."""
    stop, span_done = threading.Event(), threading.Event()
    failures: list[Exception] = []

    def run_shard(client: VAEClient, spans: list[Span]) -> None:
        try:
            for span in spans:
                for chunk in _stream(client, dataset.parameters, span, chunk_rows,
                                     resume_attempts):
                    if stop.is_set():
                        return
                    dataset.write(span, chunk.start_index, chunk.images, chunk.model_version)
                span_done.set()
        except Exception as error:  # Handed to the waiting thread, which raises it.
            if not stop.is_set():
                failures.append(error)
                stop.set()
        finally:
            span_done.set()

    shards = [
        threading.Thread(target=run_shard, args=(client, spans), daemon=True,
                         name=f"shard-{index}")
        for index, (client, spans) in enumerate(zip(clients, dataset.shards, strict=True))
    ]
    for shard in shards:
        shard.start()
    try:
        last_checkpoint = time.monotonic()
        while not stop.is_set() and any(shard.is_alive() for shard in shards):
            span_done.wait(POLL_SECONDS)
            if span_done.is_set() or time.monotonic() - last_checkpoint >= CHECKPOINT_SECONDS:
                span_done.clear()
                dataset.checkpoint()
                last_checkpoint = time.monotonic()
            on_progress(dataset.rows_done)
    finally:
        stop.set()
        for client in clients:
            client.close()  # Cancels the streams still open: their shards stop at once.
        deadline = time.monotonic() + STOP_SECONDS
        for shard in shards:
            shard.join(max(0.0, deadline - time.monotonic()))
        dataset.checkpoint()
    on_progress(dataset.rows_done)
    if failures:
        raise failures[0]
    if dataset.rows_done < dataset.parameters.count:
        raise IncompleteDataset("the server ended a stream before its last row")


def _stream(
    client: VAEClient,
    parameters: DatasetParameters,
    span: Span,
    chunk_rows: int,
    resume_attempts: int,
) -> Iterator[StreamChunk]:
    """The chunks of the rows `span` lacks: a stream of the dataset cut at the span's end,
    whose rows are those of the whole dataset (they do not depend on its count)."""
    return client.sample_stream(
        span.stop, seed=parameters.seed, start_index=span.done,
        temperature=parameters.temperature,
        output_dtype=parameters.dtype,
        chunk_rows=chunk_rows, resume_attempts=resume_attempts,
    )


def _open_dataset(args: argparse.Namespace, shards: int) -> DatasetFile:
    """The dataset to write: the one at args.out resumed, or a new one."""
    if args.resume and (args.out.exists() or progress_path(args.out).exists()):
        return DatasetFile.resume(args.out, shards, count=args.count, dtype=args.dtype,
                                  seed=args.seed, temperature=args.temperature)
    if not args.count:
        raise ResumeRefused("give --count, the rows of a new dataset (--resume continues one)")
    parameters = DatasetParameters(
        args.count,
        args.dtype or "float32",
        secrets.randbits(64) if args.seed is None else args.seed,
        float32_temperature(args.temperature),
    )
    return DatasetFile.create(args.out, parameters, shards)


@contextmanager
def _signals_raise_interrupted() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise _Interrupted in the main thread, so that the rows
    written are recorded before the process ends."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _describe(error: BaseException) -> str:
    if isinstance(error, _Interrupted):
        return f"interrupted by {error}"
    if isinstance(error, grpc.RpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error)
