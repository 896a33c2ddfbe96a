"""Model roll-out while serving: load the newest version, check and warm it, then swap it in.

Triggered by polling the model directory every `model_poll_seconds` and by SIGHUP. Loading runs
in a background thread; the swap is one assignment (ModelHolder.swap), so requests see either the
old model or the new one, and batches already running finish on the old sessions. A version
that fails to load is logged, counted in `vae_model_reload_total{result="failure"}`, and left
alone until its files change; the old version keeps serving.
"""

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from service.logging_setup import fields
from service.metrics import Metrics
from service.model import Model, ModelHolder, ModelLoadError, load_model, newest_version_dir

log = logging.getLogger(__name__)

FileSignature = tuple[tuple[str, int, int], ...]


def _signature(version_dir: Path) -> FileSignature:
    """Names, sizes and modification times of a version's files: changes when files do."""
    try:
        return tuple(
            sorted(
                (p.name, stat.st_size, stat.st_mtime_ns)
                for p in version_dir.iterdir()
                for stat in (p.stat(),)
            )
        )
    except OSError:
        return ()


class ModelReloader:
    """Swaps in the newest version under the model directory when asked or when one appears.

    `on_swap`, when given, is told each model swapped in (a worker tells its supervisor).
    """

    def __init__(
        self,
        model_dir: Path,
        holder: ModelHolder,
        metrics: Metrics,
        intra_op_threads: int,
        warmup_rows: int,
        on_swap: Callable[[Model], None] | None = None,
    ) -> None:
        self._model_dir = model_dir
        self._holder = holder
        self._metrics = metrics
        self._intra_op_threads = intra_op_threads
        self._warmup_rows = warmup_rows
        self._on_swap = on_swap
        self._lock = threading.Lock()
        self._rejected: tuple[Path, FileSignature] | None = None

    def reload(self, force: bool = False) -> bool:
        """Load and swap in the newest version if it differs from the one serving (or `force`).

        Returns whether a new model now serves. Never raises for a bad model, nor for a surprise
        while loading one (a bug, say): both are logged and counted, and the old model serves on.
        """
        with self._lock:
            current = self._holder.current
            try:
                version_dir = newest_version_dir(self._model_dir)
            except ModelLoadError as exc:
                return self._reject(self._model_dir, (), exc, force)
            if not force and version_dir.name == current.version:
                return False
            signature = _signature(version_dir)
            if not force and self._rejected == (version_dir, signature):
                return False
            try:
                model = load_model(version_dir, self._intra_op_threads, self._warmup_rows)
            except ModelLoadError as exc:
                return self._reject(version_dir, signature, exc, force)
            except Exception as exc:  # The poller must outlive whatever a model dir holds.
                return self._reject(version_dir, signature, exc, force, unexpected=True)
            self._holder.swap(model)
            self._rejected = None
            self._metrics.set_model(model.name, model.version)
            self._metrics.model_reload.labels("success").inc()
            log.info(
                "model swapped",
                extra=fields(old_version=current.version, new_version=model.version),
            )
            if self._on_swap is not None:
                self._on_swap(model)
            return True

    def _reject(
        self,
        version_dir: Path,
        signature: FileSignature,
        exc: Exception,
        force: bool,
        unexpected: bool = False,
    ) -> bool:
        """Count and log a failed load once per change of the files; the old model stays.
        An unexpected exception is logged with its traceback."""
        if force or self._rejected != (version_dir, signature):
            self._metrics.model_reload.labels("failure").inc()
            reason = f"{type(exc).__name__}: {exc}" if unexpected else str(exc)
            log.error(
                "model reload rejected",
                exc_info=exc if unexpected else None,
                extra=fields(reason=reason, serving_version=self._holder.current.version),
            )
        self._rejected = (version_dir, signature)
        return False

    def trigger(self) -> None:
        """Reload in a background thread (the SIGHUP handler); reloads queue up on the lock."""
        threading.Thread(
            target=self.reload, kwargs={"force": True}, name="model-reload", daemon=True
        ).start()

    def poll_in_background(self, interval_seconds: float, stop: threading.Event) -> None:
        """Look for a new version every `interval_seconds`, in a thread, until `stop` is set."""

        def poll() -> None:
            while not stop.wait(interval_seconds):
                self.reload()

        threading.Thread(target=poll, name="model-poll", daemon=True).start()
