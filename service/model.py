"""Loading one model version: its manifest, checksums, onnxruntime sessions and a warm-up run.

A version directory (models/vae-mnist/<n>/) holds model.json, encoder.onnx and decoder.onnx.
`load_model` either returns a Model that has answered a warm-up batch correctly or raises
ModelLoadError with a one-line reason; nothing half-loaded ever serves.
"""

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

MANIFEST = "model.json"
# The tensor names the service relies on, per graph: (input, outputs).
GRAPH_IO = {
    "encoder": ("images", ("mean", "log_variance")),
    "decoder": ("latents", ("images",)),
}


class ModelLoadError(Exception):
    """A model version is missing, corrupt or does not behave; the message is one line."""


class Graph:
    """One ONNX graph in its onnxruntime session: a single input, outputs with rows on axis 0."""

    def __init__(self, name: str, session: ort.InferenceSession, sha256: str) -> None:
        self.name = name
        self.sha256 = sha256
        self._session = session
        self._input_name, output_names = GRAPH_IO[name]
        self._output_names = list(output_names)

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Run the graph on a (rows, width) float32 array; one (rows, ...) array per output."""
        return self._session.run(self._output_names, {self._input_name: inputs})


@dataclass(frozen=True)
class Model:
    """A loaded, warmed-up model version."""

    name: str
    version: str
    path: Path
    latent_dim: int
    image_shape: tuple[int, int]
    encoder: Graph
    decoder: Graph
    training_metrics: dict[str, float]

    @property
    def image_size(self) -> int:
        """Pixels per image (784 for MNIST)."""
        return self.image_shape[0] * self.image_shape[1]


class ModelHolder:
    """The model being served, swapped as a whole when a new version is rolled out.

    Each request reads `current` once and uses that Model to the end, so a swap never mixes
    versions within a request; batches already running finish on the old sessions.
    """

    def __init__(self, model: Model) -> None:
        self._model = model
        self._swap_lock = threading.Lock()

    @property
    def current(self) -> Model:
        """The model new requests should use."""
        return self._model

    def swap(self, model: Model) -> Model:
        """Serve `model` from now on; returns the one it replaces."""
        with self._swap_lock:
            old, self._model = self._model, model
        return old


def version_dirs(model_dir: Path) -> list[Path]:
    """The numbered version directories under `model_dir`, oldest first."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    try:
        return sorted(
            (p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
            key=lambda p: int(p.name),
        )
    except OSError as exc:
        raise ModelLoadError(f"model directory {model_dir}: {_one_line(exc)}") from None


def newest_version_dir(model_dir: Path) -> Path:
    """The highest-numbered version directory under `model_dir`."""
    versions = version_dirs(model_dir)
    if not versions:
        raise ModelLoadError(f"no numbered version directory under {model_dir}")
    return versions[-1]


def load_model(version_dir: Path, intra_op_threads: int, warmup_rows: int = 1) -> Model:
    """Load and check the model in `version_dir`; raises ModelLoadError with the reason.

    Checks: the manifest parses and describes both graphs, each file's sha256 matches, the
    sessions have the expected inputs and outputs with the widths the manifest implies and a
    free number of rows, and a warm-up batch of `warmup_rows` rows (so the memory arena is
    sized for full batches) gives finite outputs of the right shapes.
    """
    manifest = _read_manifest(version_dir)
    manifest_path = version_dir / MANIFEST
    try:
        latent_dim = int(manifest["latent_dim"])
        height, width = (int(v) for v in manifest["image_shape"])
        version = str(manifest["version"])
        specs = {name: manifest["graphs"][name] for name in GRAPH_IO}
        training_section = manifest.get("training", {})
        if not isinstance(training_section, dict):
            raise TypeError("'training' must be an object")
        training = {
            key: float(value)
            for key, value in training_section.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{manifest_path}: missing or malformed field {_one_line(exc)}"
        ) from None
    if min(latent_dim, height, width) < 1:
        raise ModelLoadError(
            f"{manifest_path}: latent_dim and image_shape must be positive, "
            f"got {latent_dim} and [{height}, {width}]"
        )
    if version != version_dir.name:
        raise ModelLoadError(
            f"{manifest_path} says version {version!r} but lives in {version_dir.name!r}"
        )
    # (input width, output width) of each graph, as the manifest describes the model.
    widths = {"encoder": (height * width, latent_dim), "decoder": (latent_dim, height * width)}
    graphs = {
        name: _load_graph(name, version_dir, specs[name], intra_op_threads, widths[name])
        for name in GRAPH_IO
    }
    model = Model(
        name=str(manifest.get("name", version_dir.parent.name)),
        version=version,
        path=version_dir,
        latent_dim=latent_dim,
        image_shape=(height, width),
        encoder=graphs["encoder"],
        decoder=graphs["decoder"],
        training_metrics=training,
    )
    _warm_up(model, max(1, warmup_rows))
    return model


def _read_manifest(version_dir: Path) -> dict[str, Any]:
    path = version_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is unreadable: {_one_line(exc)}") from None
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return manifest


def _load_graph(
    name: str,
    version_dir: Path,
    spec: Any,
    intra_op_threads: int,
    widths: tuple[int, int],
) -> Graph:
    try:
        path = version_dir / spec["file"]
        expected_digest = spec["sha256"]
    except (KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"{version_dir / MANIFEST}: graphs.{name} needs a file and a sha256 "
            f"({_one_line(exc)})"
        ) from None
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise ModelLoadError(f"{path}: {_one_line(exc)}") from None
    if digest != expected_digest:
        raise ModelLoadError(
            f"{path}: sha256 {digest} does not match the manifest's {expected_digest}"
        )
    try:
        session = ort.InferenceSession(
            str(path), _session_options(intra_op_threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own, unexported exception classes
        raise ModelLoadError(f"{path}: onnxruntime cannot load it: {_one_line(exc)}") from None
    expected_input, expected_outputs = GRAPH_IO[name]
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [expected_input] or set(expected_outputs) - set(outputs):
        raise ModelLoadError(
            f"{path}: has inputs {inputs} and outputs {outputs}; the service needs input "
            f"{expected_input!r} and outputs {list(expected_outputs)}"
        )
    _check_shapes(path, session, expected_outputs, widths)
    return Graph(name, session, digest)


def _check_shapes(
    path: Path,
    session: ort.InferenceSession,
    used_outputs: tuple[str, ...],
    widths: tuple[int, int],
) -> None:
    """The graph's input and used outputs must be declared float32 (rows, width) with the
    rows left free: the batcher runs any number of rows, and a different fixed width means a
    graph that does not fit the manifest. A width left free is checked by the warm-up run."""
    input_width, output_width = widths
    declared = [(i, input_width) for i in session.get_inputs()]
    declared += [(o, output_width) for o in session.get_outputs() if o.name in used_outputs]
    for tensor, width in declared:
        shape = tensor.shape
        fits = (
            tensor.type == "tensor(float)"
            and len(shape) == 2
            and not isinstance(shape[0], int)
            and (not isinstance(shape[1], int) or shape[1] == width)
        )
        if not fits:
            raise ModelLoadError(
                f"{path}: {tensor.name} is {tensor.type} of shape {shape}; the manifest "
                f"implies float32 (rows, {width}) with any number of rows"
            )


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle onnxruntime threads would otherwise spin, taking the CPU that gRPC's threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # With weights prepacked (the default, stated here because it matters) every GEMM row is
    # computed the same way whatever the batch size; without it a 1-row batch takes another
    # kernel and differs in the last bits. Seeded results rely on this (test_determinism.py).
    options.add_session_config_entry("session.disable_prepacking", "0")
    return options


def _warm_up(model: Model, rows: int) -> None:
    """Run both graphs once on `rows` rows and check what comes back."""
    images = np.full((rows, model.image_size), 0.5, dtype=np.float32)
    latents = np.zeros((rows, model.latent_dim), dtype=np.float32)
    checks = (
        (model.encoder, images, [(rows, model.latent_dim)] * 2),
        (model.decoder, latents, [(rows, model.image_size)]),
    )
    for graph, inputs, shapes in checks:
        try:
            outputs = graph.run(inputs)
        except Exception as exc:  # onnxruntime's own exception classes
            raise ModelLoadError(f"{graph.name}: warm-up run failed: {_one_line(exc)}") from None
        got = [o.shape for o in outputs]
        if got != shapes or any(o.dtype != np.float32 for o in outputs):
            raise ModelLoadError(
                f"{graph.name}: warm-up gave shapes {got}, expected float32 {shapes}"
            )
        if not all(np.isfinite(o).all() for o in outputs):
            raise ModelLoadError(f"{graph.name}: warm-up gave non-finite values")
    if not (outputs[0].min() >= 0.0 and outputs[0].max() <= 1.0):
        raise ModelLoadError("decoder: warm-up images fall outside [0, 1]")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
