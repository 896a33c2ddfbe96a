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
