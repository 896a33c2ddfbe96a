"""`vae-client synthesize` against real servers: a dataset in a .npy file, the same bytes however
it was split over targets, interrupted or resumed.

A run is stopped at a known point without racing the server: one of its two targets is frozen
(SIGSTOP) so that its shard waits while the other shard's half of the rows is written and
recorded in the progress file; then that server is killed, or the client is sent SIGTERM.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.model_versions import copy_version
from vae_client import VAEClient

pytestmark = pytest.mark.timeout(120)

COUNT, SEED, BLOCK_ROWS, LATENT_DIM = 5000, 7, 1024, 2
HALF = COUNT // 2


def synthesize(*args: str, targets: list[str]) -> list[str]:
    """The command line of a synthesize run of the module's dataset over `targets`."""
    flags = [flag for target in targets for flag in ("--target", target)]
    return [sys.executable, "-m", "vae_client", "synthesize", *flags, *args]


def run(*args: str, targets: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(synthesize(*args, targets=targets), capture_output=True, text=True,
                          timeout=60)


def new_dataset(out: Path) -> tuple[str, ...]:
    return ("--count", str(COUNT), "--seed", str(SEED), "--dtype", "uint8", "--out", str(out))


def progress_of(out: Path) -> Path:
    return out.with_name(out.name + ".progress")


def wait_for_pending(
    out: Path, pending: list[dict[str, int]], client: subprocess.Popen[str]
) -> None:
    """Wait until the progress file lists exactly `pending`, the client still running."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if json.loads(progress_of(out).read_text())["pending"] == pending:
                return
        except FileNotFoundError:
            pass
        assert client.poll() is None, client.communicate()
        assert time.monotonic() < deadline, progress_of(out).read_text()
        time.sleep(0.02)


@pytest.fixture(scope="module")
def servers(start_vae_server):
    return start_vae_server(), start_vae_server()


@pytest.fixture(scope="module")
def reference(servers, tmp_path_factory) -> bytes:
    """The dataset's file as one uninterrupted run on one target writes it."""
    out = tmp_path_factory.mktemp("reference") / "digits.npy"
    result = run(*new_dataset(out), targets=[servers[0].target])
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


def recipe_latents(indices: list[int]) -> np.ndarray:
    """vae.proto's SampleStream noise of the given rows, temperature 1."""
    return np.stack([
        np.random.default_rng([SEED, i // BLOCK_ROWS]).standard_normal(
            (BLOCK_ROWS, LATENT_DIM), dtype=np.float32)[i % BLOCK_ROWS]
        for i in indices
    ])


def test_rows_are_the_documented_recipe_decoded_with_a_summary_and_progress(
    servers, reference, tmp_path
) -> None:
    out = tmp_path / "digits.npy"
    result = run(*new_dataset(out), targets=[servers[0].target])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {key: summary[key] for key in ("out", "rows", "fetched_rows", "seed", "dtype")} == {
        "out": str(out), "rows": COUNT, "fetched_rows": COUNT, "seed": SEED, "dtype": "uint8"
    }
    assert summary["model_version"] == "1" and summary["rows_per_second"] > 0
    # Not a terminal: the progress bar writes whole lines, the last one at the end.
    assert result.stderr.splitlines()[-1].startswith("5,000 / 5,000 rows (100.0%)  ")
    assert not progress_of(out).exists()
    digits = np.load(out)
    assert digits.shape == (COUNT, 28, 28) and digits.dtype == np.uint8
    rows = [0, 1, BLOCK_ROWS - 1, BLOCK_ROWS, COUNT - 1]
    with VAEClient(servers[0].target) as client:
        decoded = client.decode(recipe_latents(rows))
    np.testing.assert_array_equal(digits[rows], np.rint(decoded * np.float32(255)).astype(np.uint8))
    assert out.read_bytes() == reference


def test_two_targets_write_the_same_bytes_as_one(servers, reference, tmp_path) -> None:
    out = tmp_path / "digits.npy"
    result = run(*new_dataset(out), targets=[server.target for server in servers])
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == reference


def test_a_server_killed_mid_run_is_resumed_on_another_bitwise(
    servers, reference, start_vae_server, tmp_path
) -> None:
    doomed = start_vae_server()
    doomed.signal(signal.SIGSTOP)
    out = tmp_path / "digits.npy"
    client = subprocess.Popen(
        synthesize(*new_dataset(out), "--resume-attempts", "0",
                   targets=[servers[0].target, doomed.target]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_pending(out, [{"start": HALF, "stop": COUNT, "done": HALF}], client)
    doomed.process.kill()
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == 1
    assert "vae-client: UNAVAILABLE: " in stderr
    assert (f"vae-client: 2,500 of 5,000 rows are in {out}; rerun with --resume to fetch the rest"
            in stderr)
    decoded_before = servers[1].metric("vae_batch_size_sum", graph="decoder")
    resumed = run("--resume", "--out", str(out), targets=[servers[1].target])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["fetched_rows"] == COUNT - HALF
    # Only the missing rows were asked for.
    assert servers[1].metric("vae_batch_size_sum", graph="decoder") - decoded_before == HALF
    assert out.read_bytes() == reference


def test_sigterm_records_the_rows_written_and_resume_keeps_to_the_model_version(
    servers, reference, start_vae_server, model_dir, tmp_path
) -> None:
    first, frozen = servers
    out = tmp_path / "digits.npy"
    frozen.signal(signal.SIGSTOP)
    try:
        client = subprocess.Popen(
            synthesize(*new_dataset(out), targets=[first.target, frozen.target]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        wait_for_pending(out, [{"start": HALF, "stop": COUNT, "done": HALF}], client)
        client.send_signal(signal.SIGTERM)
        _, stderr = client.communicate(timeout=60)
    finally:
        frozen.signal(signal.SIGCONT)
    assert client.returncode == 128 + signal.SIGTERM
    assert "vae-client: interrupted by SIGTERM" in stderr and "rerun with --resume" in stderr
    recorded = progress_of(out).read_text()

    copy_version(model_dir, tmp_path / "models", "2")
    other_version = start_vae_server(VAE_MODEL_DIR=str(tmp_path / "models"))
    refused = run("--resume", "--out", str(out), targets=[other_version.target])
    assert refused.returncode == 1
    assert f"{out} holds rows of model version '1', but rows from 2500 on came from " \
        "version '2'" in refused.stderr
    assert progress_of(out).read_text() == recorded

    resumed = run("--resume", "--out", str(out), targets=[frozen.target])
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference


def test_resuming_with_other_parameters_is_refused_and_leaves_the_file(tmp_path) -> None:
    out = tmp_path / "digits.npy"
    nobody = ["127.0.0.1:1"]
    failed = run(*new_dataset(out), "--resume-attempts", "0", targets=nobody)
    assert failed.returncode == 1 and "rerun with --resume" in failed.stderr
    recorded = progress_of(out).read_text()
    for flag, value, begun_with in (("--seed", "8", "7"), ("--count", "4000", "5000"),
                                    ("--dtype", "float32", "uint8")):
        refused = run("--resume", "--out", str(out), flag, value, targets=nobody)
        assert refused.returncode == 1
        assert refused.stderr == (
            f"vae-client: {out} was begun with {flag} {begun_with}, not {value}: resume it with "
            "the same parameters, or write the new dataset elsewhere\n"
        )
    assert progress_of(out).read_text() == recorded
    again = run(*new_dataset(out), targets=nobody)
    assert again.returncode == 1
    assert again.stderr == f"vae-client: {out} exists: add --resume to continue it, or remove it\n"
