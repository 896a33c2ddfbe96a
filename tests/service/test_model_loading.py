"""Model versions: the newest is served; a missing or corrupt one is refused with one line."""


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


@pytest.mark.parametrize("case", ["missing directory", "corrupt model"])
def test_the_server_exits_1_with_one_line_and_never_serves(
    start_vae_server, model_dir, tmp_path, case
) -> None:
    if case == "missing directory":
        served = tmp_path / "nowhere"
    else:
        served = tmp_path / "models"
        version_dir = copy_version(model_dir, served, "1")
        (version_dir / "decoder.onnx").write_bytes(b"not onnx")
    server = start_vae_server(wait_serving=False, VAE_MODEL_DIR=str(served))
    assert server.wait_exit() == 1
    errors = [r for r in server.records() if r["level"] == "ERROR"]
    assert len(errors) == 1 and errors[0]["message"].startswith("cannot start: ")
    assert not any(r["message"] == "serving" for r in server.records())
