"""Copies of the bundled model, edited or broken on purpose, for loading and roll-out tests."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from service.model import newest_version_dir


def publish(source_dir: Path, root: Path, version: str, break_it=None) -> Path:
    """Add a copy of the bundled model as version `version` under `root` as an operator should:
    complete it beside the served ones, then rename it in, in one step. `break_it` spoils it
    first."""
    staged = copy_version(source_dir, root / ".staging", version)
    if break_it is not None:
        break_it(staged)
    return staged.rename(root / version)


def copy_version(source_dir: Path, target_root: Path, version: str) -> Path:
    """A copy of the bundled model as `target_root/<version>`, its manifest saying `version`."""
    target = target_root / version
    shutil.copytree(newest_version_dir(source_dir), target)
    manifest_path = target / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = version
    manifest_path.write_text(json.dumps(manifest))
    return target


def edit_manifest(version_dir: Path, **changes) -> None:
    """Replace top-level fields of a version's model.json."""
    path = version_dir / "model.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def change_decoder(version_dir: Path) -> None:
    """Give a version a decoder of its own: every weight of the bundled one times 0.9, and the
    manifest's checksum to match. It loads and serves like any version, with other images."""
    path = version_dir / "decoder.onnx"
    graph = onnx.load(path)
    for weights in graph.graph.initializer:
        values = numpy_helper.to_array(weights)
        if values.dtype == np.float32:
            weights.CopyFrom(numpy_helper.from_array(values * np.float32(0.9), weights.name))
    onnx.save(graph, path)
    graphs = json.loads((version_dir / "model.json").read_text())["graphs"]
    graphs["decoder"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    edit_manifest(version_dir, graphs=graphs)


def corruptions():
    """(id, how to break a copied version directory, words the reason must contain)."""

    def truncate(d: Path) -> None:
        data = (d / "decoder.onnx").read_bytes()[:1000]
        (d / "decoder.onnx").write_bytes(data)
        graphs = json.loads((d / "model.json").read_text())["graphs"]
        graphs["decoder"]["sha256"] = hashlib.sha256(data).hexdigest()
        edit_manifest(d, graphs=graphs)

    def swap_graphs(d: Path) -> None:
        graphs = json.loads((d / "model.json").read_text())["graphs"]
        graphs["encoder"], graphs["decoder"] = graphs["decoder"], graphs["encoder"]
        edit_manifest(d, graphs=graphs)

    return [
        ("no manifest", lambda d: (d / "model.json").unlink(), "model.json is missing"),
        ("manifest not JSON", lambda d: (d / "model.json").write_text("{"), "unreadable"),
        ("manifest a list", lambda d: (d / "model.json").write_text("[]"), "not a JSON object"),
        ("no graphs", lambda d: edit_manifest(d, graphs={}), "'encoder'"),
        ("version mismatch", lambda d: edit_manifest(d, version="7"), "says version '7'"),
        ("missing decoder", lambda d: (d / "decoder.onnx").unlink(), "decoder.onnx"),
        ("flipped byte", lambda d: (d / "encoder.onnx").write_bytes(
            (d / "encoder.onnx").read_bytes()[:-1] + b"\0"), "does not match"),
        ("truncated with matching sha", truncate, "onnxruntime cannot load it"),
        ("graphs swapped", swap_graphs, "the service needs input"),
        ("latent size the graphs lack", lambda d: edit_manifest(d, latent_dim=3),
         "the manifest implies float32 (rows, 3)"),
        ("image size the graphs lack", lambda d: edit_manifest(d, image_shape=[32, 32]),
         "the manifest implies float32 (rows, 1024)"),
        ("training not an object", lambda d: edit_manifest(d, training=[1, 2]),
         "'training' must be an object"),
    ]
