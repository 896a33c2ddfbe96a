"""Model roll-out while serving: new versions are swapped in, broken ones rejected."""

import os
import signal
import threading

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_model_loading import copy_version

from vae_client import VAEClient

pytestmark = pytest.mark.timeout(120)


def reloads(server) -> dict[str, float]:
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(server.scrape())
        if family.name == "vae_model_reload"
        for sample in family.samples
        if sample.name == "vae_model_reload_total"
    }


def publish(model_dir, root, version: str):
    """Add a version the way an operator should: complete it elsewhere, then rename it in."""
    staged = copy_version(model_dir, root / ".staging", version)
    os.rename(staged, root / version)
    return root / version


def test_a_new_version_is_swapped_in_while_requests_run_and_a_broken_one_is_rejected(
    start_vae_server, model_dir, tmp_path
) -> None:
    served = tmp_path / "models"
    copy_version(model_dir, served, "1")
    server = start_vae_server(VAE_MODEL_DIR=str(served), VAE_MODEL_POLL_SECONDS="0.1")
    failures: list[grpc.RpcError] = []
    versions: list[str] = []
    stop = threading.Event()

    def keep_calling() -> None:
        with VAEClient(server.target) as client:
            while not stop.is_set():
                try:
                    versions.append(client.sample(4, seed=1).model_version)
                except grpc.RpcError as error:
                    failures.append(error)

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        publish(model_dir, served, "2")
        swapped = server.wait_for_log("model swapped", timeout=30)
        assert (swapped["old_version"], swapped["new_version"]) == ("1", "2")
        broken = publish(model_dir, served, "3")
        (broken / "encoder.onnx").write_bytes(b"broken")
        rejected = server.wait_for_log("model reload rejected", timeout=30)
        assert rejected["serving_version"] == "2"
        assert "encoder.onnx: sha256" in rejected["reason"]
    finally:
        stop.set()
        caller.join()
    assert failures == []
    assert versions[0] == "1" and versions[-1] == "2"
    assert reloads(server) == {"success": 1.0, "failure": 1.0}
    with VAEClient(server.target) as client:
        assert client.info().version == "2"


def test_sighup_reloads_the_newest_version(start_vae_server, model_dir, tmp_path) -> None:
    served = tmp_path / "models"
    copy_version(model_dir, served, "1")
    server = start_vae_server(VAE_MODEL_DIR=str(served))
    publish(model_dir, served, "2")
    server.signal(signal.SIGHUP)
    server.wait_for_log("model swapped", timeout=30)
    with VAEClient(server.target) as client:
        assert client.sample(1).model_version == "2"
    assert reloads(server) == {"success": 1.0, "failure": 0.0}
