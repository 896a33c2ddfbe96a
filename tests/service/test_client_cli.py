"""The command-line client against a real server: files in, JSON and PNG grids out."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.timeout(120)
VAE_CLIENT = Path(sys.executable).with_name("vae-client")


def cli(*args: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vae_client", "--target", target, *args],
        capture_output=True, text=True, timeout=60,
    )


def test_sample_saves_the_seeded_digits_as_a_png_grid(vae_server, client, tmp_path) -> None:
    out = tmp_path / "grid.png"
    result = cli("sample", "--count", "64", "--seed", "7", "--out", str(out),
                 target=vae_server.target)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "model_version": client.info().version, "count": 64, "out": str(out)
    }
    grid = np.asarray(Image.open(out))
    assert grid.shape == (8 * 30 + 2, 8 * 30 + 2) and grid.dtype == np.uint8
    expected = np.rint(client.sample(64, seed=7).images * 255).astype(np.uint8)
    np.testing.assert_array_equal(grid[2:30, 2:30], expected[0])
    np.testing.assert_array_equal(grid[-30:-2, -30:-2], expected[63])


def test_encode_and_reconstruct_read_digit_pngs(vae_server, client, heldout, tmp_path) -> None:
    files = []
    for index in range(3):
        path = tmp_path / f"digit{index}.png"
        Image.fromarray(heldout[index].reshape(28, 28)).save(path)
        files.append(str(path))
    encoded = cli("encode", *files, target=vae_server.target)
    assert encoded.returncode == 0, encoded.stderr
    rows = json.loads(encoded.stdout)["images"]
    expected = client.encode(heldout[:3]).mean
    np.testing.assert_allclose([row["mean"] for row in rows], expected, rtol=1e-6)
    assert [row["file"] for row in rows] == files
    out = tmp_path / "recon.png"
    reconstructed = cli("reconstruct", files[0], "--out", str(out), target=vae_server.target)
    assert reconstructed.returncode == 0, reconstructed.stderr
    (row,) = json.loads(reconstructed.stdout)["images"]
    assert row["reconstruction_error_nats"] == pytest.approx(
        float(client.reconstruct(heldout[:1]).errors[0]), rel=1e-6
    )
    assert np.asarray(Image.open(out)).shape == (32, 32)


def test_decode_and_info(vae_server, tmp_path) -> None:
    out = tmp_path / "decoded.png"
    decoded = cli("decode", "0", "0", "1.5", "-1", "--out", str(out), target=vae_server.target)
    assert decoded.returncode == 0, decoded.stderr
    assert json.loads(decoded.stdout)["count"] == 2 and out.exists()
    info = cli("info", target=vae_server.target)
    assert json.loads(info.stdout)["name"] == "vae-mnist"


def test_errors_are_one_line_with_the_status_and_exit_1(vae_server) -> None:
    bad = cli("sample", "--count", "0", target=vae_server.target)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "vae-client: INVALID_ARGUMENT: count: must be between 1 and 4096, got 0"
    )
    nobody = cli("--timeout", "2", "info", target="127.0.0.1:1")
    assert nobody.returncode == 1 and nobody.stderr.startswith("vae-client: UNAVAILABLE")


def test_the_vae_client_entry_point_is_installed(vae_server) -> None:
    result = subprocess.run([str(VAE_CLIENT), "--target", vae_server.target, "info"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def digit_files(digits: np.ndarray, directory: Path) -> list[str]:
    """Each (784,) uint8 digit saved as a PNG file; their paths."""
    files = []
    for index, digit in enumerate(digits):
        path = directory / f"digit{index}.png"
        Image.fromarray(digit.reshape(28, 28)).save(path)
        files.append(str(path))
    return files


def pixels(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] as the uint8 a PNG grid holds."""
    return np.rint(images * 255).astype(np.uint8)


def test_interpolate_saves_a_one_row_strip_and_prints_the_latents(
    vae_server, client, heldout, tmp_path
) -> None:
    start, end = digit_files(heldout[[3, 8]], tmp_path)
    out = tmp_path / "morph.png"
    result = cli("interpolate", start, end, "--steps", "10", "--out", str(out),
                 target=vae_server.target)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = client.interpolate(heldout[3], heldout[8], 10)
    assert printed == {"model_version": expected.model_version,
                       "latents": expected.latents.tolist(), "out": str(out)}
    strip = np.asarray(Image.open(out))
    assert strip.shape == (32, 10 * 30 + 2)
    np.testing.assert_array_equal(strip[2:30, 2:30], pixels(expected.images[0]))
    np.testing.assert_array_equal(strip[2:30, -30:-2], pixels(expected.images[9]))


def test_interpolate_takes_latent_points_negative_ones_after_the_double_dash(
    vae_server, heldout, tmp_path
) -> None:
    linear = cli("interpolate", "--steps", "3", "--path", "linear", "--", "-1.5,0.25", "0.5,2",
                 target=vae_server.target)
    assert linear.returncode == 0, linear.stderr
    printed = json.loads(linear.stdout)
    assert printed["latents"] == [[-1.5, 0.25], [-0.5, 1.125], [0.5, 2.0]]
    assert printed["out"] is None
    (digit,) = digit_files(heldout[:1], tmp_path)
    mixed = cli("interpolate", digit, "0,0", "--steps", "4", target=vae_server.target)
    assert mixed.returncode == 0, mixed.stderr
    assert json.loads(mixed.stdout)["latents"][-1] == [0.0, 0.0]
    helped = cli("interpolate", "--help", target=vae_server.target)
    assert "  vae-client interpolate --steps 10 --out morph.png -- -1.5,0.3 digit.png\n" in (
        helped.stdout
    )


def test_variations_saves_one_row_per_image_and_count_columns(
    vae_server, client, heldout, tmp_path
) -> None:
    files = digit_files(heldout[:2], tmp_path)
    out = tmp_path / "grid.png"
    result = cli("variations", *files, "--count", "16", "--temperature", "0.5", "--seed", "7",
                 "--out", str(out), target=vae_server.target)
    assert result.returncode == 0, result.stderr
    expected = client.variations(heldout[:2], 16, temperature=0.5, seed=7)
    assert json.loads(result.stdout) == {
        "model_version": expected.model_version,
        "images": [{"file": file, "latents": latents.tolist()}
                   for file, latents in zip(files, expected.latents, strict=True)],
        "out": str(out),
    }
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 30 + 2, 16 * 30 + 2)
    np.testing.assert_array_equal(grid[32:60, 2:30], pixels(expected.images[1, 0]))
    np.testing.assert_array_equal(grid[2:30, -30:-2], pixels(expected.images[0, 15]))


def test_score_prints_one_json_line_per_file_each_scored_on_its_own(
    vae_server, client, heldout, tmp_path
) -> None:
    files = digit_files(heldout[:3], tmp_path)
    result = cli("score", *files, "--samples", "8", "--seed", "7", target=vae_server.target)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line, file, digit in zip(lines, files, heldout[:3], strict=True):
        expected = client.score(digit[None], 8, seed=7)
        assert json.loads(line) == {
            "file": file,
            "elbo": float(expected.elbo[0]),
            "log_likelihood": float(expected.log_likelihood[0]),
            "model_version": expected.model_version,
        }


def test_latent_commands_report_bad_input_as_one_line_and_exit_1(
    vae_server, heldout, tmp_path
) -> None:
    files = digit_files(heldout[:1], tmp_path)
    for args, message in [
        (("score", *files, "--samples", "0"), "INVALID_ARGUMENT: samples: must be between 1"),
        (("variations", *files, "--temperature", "-1"), "INVALID_ARGUMENT: temperature: "),
        (("interpolate", "0,0,0", "1,1"), "INVALID_ARGUMENT: start.latent.shape: "),
        (("interpolate", "0,0", "1,1", "--steps", "1"), "INVALID_ARGUMENT: steps: "),
    ]:
        result = cli(*args, target=vae_server.target)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith(f"vae-client: {message}"), result.stderr
        assert len(result.stderr.splitlines()) == 1
