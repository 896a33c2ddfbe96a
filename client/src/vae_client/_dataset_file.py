"""A synthetic dataset being written into a .npy file, and the progress file that says which of
its rows are in it yet.

The .npy file is made at full size, (count, 28, 28), and rows are written in place as they come,
so shards write their own index ranges of one file and a resumed run writes only what is
missing. Beside it, `<file>.progress` (JSON) records the dataset's parameters, the model version
its rows came from, and the rows still pending: a list of spans, each with how far it got. Every
row outside the pending spans is written. It is replaced atomically, and only after the rows it
counts are flushed to the file, so it never claims a row the file does not hold. A finished
dataset has no progress file.
"""

import itertools
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vae_client._images import MNIST_SIDE

PROGRESS_SUFFIX = ".progress"
_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "uint8": np.dtype("u1")}


@dataclass(frozen=True)
class DatasetParameters:
    """What defines the rows of a SampleStream dataset, besides the model version.

    temperature is the float32 value sent (1.0 for the server's default), so that two ways of
    writing the same temperature compare equal.
    """

    count: int
    dtype: str
    seed: int
    temperature: float


@dataclass
class Span:
    """Rows start .. stop - 1 of the dataset, of which start .. done - 1 are written."""

    start: int
    stop: int
    done: int


class ResumeRefused(ValueError):
    """The dataset cannot be begun or continued as asked (its file exists, its parameters or
    model version differ, ...); the message says why and what to do."""


def progress_path(path: Path) -> Path:
    """The progress file of the dataset file `path`."""
    return path.with_name(path.name + PROGRESS_SUFFIX)


def float32_temperature(temperature: float | None) -> float:
    """The temperature as the server sees it: a float32, 1.0 when unset."""
    return float(np.float32(1.0 if temperature is None else temperature))


def split(pending: list[tuple[int, int]], shards: int) -> list[list[Span]]:
    """The rows of the `pending` ranges (start, stop), in order, cut into `shards` runs of
    contiguous rows as even as can be; a run may span several ranges, and may be empty."""
    total = sum(stop - start for start, stop in pending)
    bounds = [total * shard // shards for shard in range(shards + 1)]
    runs: list[list[Span]] = []
    for first, last in itertools.pairwise(bounds):
        run, offset = [], 0
        for start, stop in pending:
            # This range covers rows offset .. offset + (stop - start) of the concatenation.
            low, high = max(first, offset), min(last, offset + stop - start)
            if low < high:
                run.append(Span(start + low - offset, start + high - offset,
                                start + low - offset))
            offset += stop - start
        runs.append(run)
    return runs


class DatasetFile:
    """The .npy file of one dataset and its progress; `shards` are the spans each shard is to
    write. Safe to use from several threads, one shard each."""

    def __init__(
        self,
        path: Path,
        parameters: DatasetParameters,
        model_version: str | None,
        shards: list[list[Span]],
        images: np.memmap,
    ) -> None:
        self.path = path
        self.parameters = parameters
        self.model_version = model_version
        self.shards = shards
        self._images = images
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: Path, parameters: DatasetParameters, shards: int) -> "DatasetFile":
        """A new dataset file of `parameters.count` rows (none written yet), its rows split
        evenly over `shards`. Refused if the file or its progress file exists."""
        for existing in (path, progress_path(path)):
            if existing.exists():
                raise ResumeRefused(
                    f"{existing} exists: add --resume to continue it, or remove it"
                )
        spans = split([(0, parameters.count)], shards)
        # The progress file first: a dataset file without one would pass for a finished one.
        _replace_progress(path, _progress_record(parameters, None, spans))
        images = np.lib.format.open_memmap(
            path, mode="w+", dtype=_NUMPY_DTYPES[parameters.dtype],
            shape=(parameters.count, MNIST_SIDE, MNIST_SIDE),
        )
        return cls(path, parameters, None, spans, images)

    @classmethod
    def resume(
        cls,
        path: Path,
        shards: int,
        *,
        count: int | None,
        dtype: str | None,
        seed: int | None,
        temperature: float | None,
    ) -> "DatasetFile":
        """The dataset that `path` and its progress file hold, its missing rows split evenly
        over `shards`. A parameter given (not None) must be the one the file was begun with."""
        progress = progress_path(path)
        if not progress.exists():
            raise ResumeRefused(
                f"{path} has no {progress.name}: it is complete, or not a synthesized dataset"
            )
        if not path.exists():
            raise ResumeRefused(f"{progress} has lost its {path.name}: remove it and start anew")
        record: dict[str, Any] = json.loads(progress.read_text())
        parameters = DatasetParameters(
            record["count"], record["dtype"], record["seed"], record["temperature"]
        )
        given = {"count": count, "dtype": dtype, "seed": seed,
                 "temperature": None if temperature is None else float32_temperature(temperature)}
        for name, value in given.items():
            begun_with = getattr(parameters, name)
            if value is not None and value != begun_with:
                # A temperature as written, not as the float32 it became.
                shown = np.float32 if name == "temperature" else str
                raise ResumeRefused(
                    f"{path} was begun with --{name} {shown(begun_with)!s}, not "
                    f"{shown(value)!s}: resume it with the same parameters, or write the new "
                    "dataset elsewhere"
                )
        images = np.lib.format.open_memmap(path, mode="r+")
        expected_shape = (parameters.count, MNIST_SIDE, MNIST_SIDE)
        if images.shape != expected_shape or images.dtype != _NUMPY_DTYPES[parameters.dtype]:
            raise ResumeRefused(
                f"{path} holds {images.shape} {images.dtype}, not the {expected_shape} "
                f"{parameters.dtype} its progress file describes"
            )
        pending = [(span["done"], span["stop"]) for span in record["pending"]]
        return cls(path, parameters, record["model_version"], split(pending, shards), images)

    @property
    def rows_done(self) -> int:
        """Rows written so far."""
        with self._lock:
            pending = sum(span.stop - span.done for run in self.shards for span in run)
        return self.parameters.count - pending

    def write(self, span: Span, start_index: int, images: np.ndarray, model_version: str) -> None:
        """Write rows start_index .. of `span`, the next it lacks, which came from
        `model_version`: the dataset's, or the first any shard saw. Raises ResumeRefused,
        writing nothing, for rows of another version."""
        with self._lock:
            if self.model_version is None:
                self.model_version = model_version
            elif model_version != self.model_version:
                raise ResumeRefused(
                    f"{self.path} holds rows of model version {self.model_version!r}, but "
                    f"rows from {start_index} on came from version {model_version!r}: "
                    f"resume it against servers of version {self.model_version!r}"
                )
        if start_index != span.done or start_index + len(images) > span.stop:
            raise RuntimeError(
                f"rows {start_index}..{start_index + len(images) - 1} do not continue "
                f"rows {span.start}..{span.done - 1} of span {span.start}..{span.stop - 1}"
            )
        self._images[start_index:start_index + len(images)] = images
        with self._lock:
            span.done += len(images)

    def checkpoint(self) -> None:
        """Flush the rows written, then record them in the progress file."""
        with self._lock:
            record = _progress_record(self.parameters, self.model_version, self.shards)
        self._images.flush()
        _replace_progress(self.path, record)

    def complete(self) -> None:
        """Flush the last rows and remove the progress file: the dataset is whole."""
        self._images.flush()
        progress_path(self.path).unlink()



def _progress_record(
    parameters: DatasetParameters, model_version: str | None, shards: list[list[Span]]
) -> dict[str, Any]:
    """What the progress file says: the parameters, the model version and the pending spans."""
    return {
        **asdict(parameters),
        "model_version": model_version,
        "pending": [asdict(span) for run in shards for span in run if span.done < span.stop],
    }


def _replace_progress(path: Path, record: dict[str, Any]) -> None:
    """Write the progress file of `path` whole or not at all: a crash leaves the last one."""
    progress = progress_path(path)
    staged = progress.with_name(progress.name + ".tmp")
    with staged.open("w") as file:
        json.dump(record, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    os.replace(staged, progress)
