"""Model versions: the newest is served; a missing or corrupt one is refused with one line,
and a server whose newest version is broken never starts (there is no fallback)."""

import json
import shutil

import pytest

from service.model import ModelHolder, ModelLoadError, load_model, newest_version_dir
from tests.model_versions import copy_version, corruptions

pytestmark = pytest.mark.timeout(120)


def test_the_highest_numbered_version_is_served_not_the_last_in_name_order(
    model_dir, tmp_path
) -> None:
    for version in ("2", "10", "9"):
        copy_version(model_dir, tmp_path, version)
    (tmp_path / "latest").mkdir()  # not a number: ignored
    assert newest_version_dir(tmp_path).name == "10"
    assert load_model(newest_version_dir(tmp_path), 1).version == "10"


def test_a_loaded_model_carries_the_manifest(model_dir, model_manifest) -> None:
    model = load_model(newest_version_dir(model_dir), 1, warmup_rows=8)
    assert (model.name, model.version) == (model_manifest["name"], model_manifest["version"])
    assert model.image_shape == (28, 28) and model.image_size == 784
    assert model.encoder.sha256 == model_manifest["graphs"]["encoder"]["sha256"]
    assert model.training_metrics["heldout_neg_elbo_nats"] > 0


def test_the_holder_swaps_whole_models(model_dir, tmp_path) -> None:
    first = load_model(copy_version(model_dir, tmp_path, "1"), 1)
    second = load_model(copy_version(model_dir, tmp_path, "2"), 1)
    holder = ModelHolder(first)
    assert holder.swap(second) is first
    assert holder.current is second


@pytest.mark.parametrize(("break_it", "reason"),
                         [pytest.param(f, r, id=i) for i, f, r in corruptions()])
def test_a_corrupt_version_is_refused_with_a_one_line_reason(
    model_dir, tmp_path, break_it, reason
) -> None:
    version_dir = copy_version(model_dir, tmp_path, "3")
    break_it(version_dir)
    with pytest.raises(ModelLoadError) as raised:
        load_model(version_dir, 1)
    assert reason in str(raised.value)
    assert "\n" not in str(raised.value)


def test_no_version_at_all_is_refused(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="no numbered version"):
        newest_version_dir(tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        newest_version_dir(tmp_path / "nowhere")


CORRUPTIONS = {name: break_it for name, break_it, _ in corruptions()}
# (how to break a model directory holding a good version 1, words the reason must contain)
START_UP_FAILURES = {
    "missing directory": (shutil.rmtree, "does not exist"),
    "no numbered version": (lambda root: (root / "1").rename(root / "latest"),
                            "no numbered version directory under"),
    "graph not ONNX": (lambda root: (root / "1" / "decoder.onnx").write_bytes(b"not onnx"),
                       "does not match the manifest"),
    "graph onnxruntime cannot load": (
        lambda root: CORRUPTIONS["truncated with matching sha"](root / "1"),
        "onnxruntime cannot load it"),
    "shapes the graphs lack": (lambda root: CORRUPTIONS["latent size the graphs lack"](root / "1"),
                               "the manifest implies float32 (rows, 3)"),
    "newest broken, an older one fine": (
        lambda root: (copy_version(root, root, "2") / "encoder.onnx").unlink(),
        "2/encoder.onnx"),
}


@pytest.mark.parametrize("case", sorted(START_UP_FAILURES))
def test_a_broken_model_at_start_up_exits_1_with_one_json_line_and_never_serves(
    start_vae_server, model_dir, tmp_path, case
) -> None:
    break_it, reason = START_UP_FAILURES[case]
    served = tmp_path / "models"
    copy_version(model_dir, served, "1")
    break_it(served)
    server = start_vae_server(wait_serving=False, VAE_MODEL_DIR=str(served))
    assert server.wait_exit() == 1
    records = [json.loads(line) for line in server.lines]  # every line is one JSON record
    (error,) = [r for r in records if r["level"] == "ERROR"]
    assert error["message"].startswith("cannot start: ") and reason in error["message"]
    assert "exception" not in error
    assert not any(r["message"] == "serving" for r in records)
