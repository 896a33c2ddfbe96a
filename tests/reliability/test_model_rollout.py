"""Model roll-out while requests run.

A new version (found by polling, or on SIGHUP) is swapped in with no failed request, and every
answer after the swap carries its version. Broken versions are rejected one after another, each
with a log line naming the reason and one count in `vae_model_reload_total{result="failure"}`,
while the old version keeps answering. A server whose newest model is broken never starts.
"""

import json
import os
import signal
from pathlib import Path

import pytest
from reliability_tools import BUNDLED_MODEL_DIR, Traffic, metric, seeded_requests, wait_for_metric

from tests.model_versions import copy_version, corruptions, edit_manifest

pytestmark = pytest.mark.timeout(180)


def publish(root: Path, version: str, break_it=None) -> Path:
    """Add a version as an operator should: complete it beside the served ones, then rename it
    in, in one step. `break_it` spoils it first."""
    staged = copy_version(BUNDLED_MODEL_DIR, root / ".staging", version)
    if break_it is not None:
        break_it(staged)
    os.rename(staged, root / version)
    return root / version


def assert_versions_move_forward(traffic: Traffic, old: str, new: str) -> None:
    """Each caller saw the old version, then only the new one."""
    for log in traffic.logs:
        switch = log.versions.index(new)
        assert set(log.versions[:switch]) == {old} and set(log.versions[switch:]) == {new}


def breakages():
    """(id, how to break a version, words its rejection reason must contain): the corruptions
    the model loader is tested with, and a manifest whose shapes the graphs do not have."""
    cases = list(corruptions())
    cases += [
        ("latent size the graphs lack", lambda d: edit_manifest(d, latent_dim=3),
         "the manifest implies float32 (rows, 3)"),
        ("image size the graphs lack", lambda d: edit_manifest(d, image_shape=[32, 32]),
         "the manifest implies float32 (rows, 1024)"),
        ("training not an object", lambda d: edit_manifest(d, training=[1, 2]),
         "'training' must be an object"),
    ]
    return cases


@pytest.mark.parametrize("trigger", ["poll", "SIGHUP"])
def test_a_new_version_is_swapped_in_under_load_without_a_failed_request(
    start_vae_server, served_models, heldout, trigger
) -> None:
    server = start_vae_server(
        VAE_MODEL_DIR=str(served_models),
        VAE_MODEL_POLL_SECONDS="0.1" if trigger == "poll" else "0",
    )
    with Traffic(server.target, seeded_requests(heldout), callers=3) as traffic:
        traffic.wait_answered(1)
        publish(served_models, "2")
        if trigger == "SIGHUP":
            server.signal(signal.SIGHUP)
        swapped = server.wait_for_log("model swapped", timeout=60)
        traffic.wait_answered(len(traffic.calls))
    assert (swapped["old_version"], swapped["new_version"]) == ("1", "2")
    traffic.assert_clean()
    assert_versions_move_forward(traffic, "1", "2")
    assert metric(server, "vae_model_info", version="2") == 1
    assert metric(server, "vae_model_reload_total", result="success") == 1
    assert metric(server, "vae_model_reload_total", result="failure") == 0


def test_broken_versions_are_rejected_under_load_while_the_old_one_serves(
    start_vae_server, served_models, heldout
) -> None:
    server = start_vae_server(VAE_MODEL_DIR=str(served_models), VAE_MODEL_POLL_SECONDS="0.1")
    cases = breakages()
    with Traffic(server.target, seeded_requests(heldout), callers=2) as traffic:
        for number, (name, break_it, reason) in enumerate(cases, start=1):
            publish(served_models, str(1 + number), break_it)
            wait_for_metric(server, "vae_model_reload_total", number, result="failure")
            rejection = [r for r in server.records() if r["message"] == "model reload rejected"][-1]
            assert reason in rejection["reason"], (name, rejection)
            assert "\n" not in rejection["reason"] and "exception" not in rejection, name
            assert rejection["serving_version"] == "1"
            traffic.wait_answered(1)
        assert {v for log in traffic.logs for v in log.versions} == {"1"}
        # A good version after them all is still picked up; each broken one counted once.
        good = str(len(cases) + 2)
        publish(served_models, good)
        server.wait_for_log("model swapped", timeout=60)
        traffic.wait_answered(len(traffic.calls))
    traffic.assert_clean()
    assert_versions_move_forward(traffic, "1", good)
    assert metric(server, "vae_model_reload_total", result="failure") == len(cases)
    assert metric(server, "vae_model_reload_total", result="success") == 1


CORRUPTIONS = {name: break_it for name, break_it, _ in corruptions()}
START_UP_BREAKAGES = {
    # tests/service covers a missing model directory and a graph whose checksum is wrong.
    "no numbered version": (lambda root: (root / "1").rename(root / "latest"),
                            "no numbered version directory under"),
    "graph onnxruntime cannot load": (
        lambda root: CORRUPTIONS["truncated with matching sha"](root / "1"),
        "onnxruntime cannot load it"),
    "shapes the graphs lack": (lambda root: edit_manifest(root / "1", latent_dim=3),
                               "the manifest implies float32 (rows, 3)"),
    "training not an object": (lambda root: edit_manifest(root / "1", training="good"),
                               "'training' must be an object"),
    "newest broken, an older one fine": (
        lambda root: publish(root, "2", lambda d: (d / "encoder.onnx").unlink()),
        "2/encoder.onnx"),
}


@pytest.mark.parametrize("case", sorted(START_UP_BREAKAGES))
def test_a_broken_model_at_start_up_exits_1_with_one_json_line_and_never_serves(
    start_vae_server, served_models, case
) -> None:
    break_it, reason = START_UP_BREAKAGES[case]
    break_it(served_models)
    server = start_vae_server(wait_serving=False, VAE_MODEL_DIR=str(served_models))
    assert server.wait_exit() == 1
    records = [json.loads(line) for line in server.lines]  # every line is one JSON record
    (error,) = [r for r in records if r["level"] == "ERROR"]
    assert error["message"].startswith("cannot start: ") and reason in error["message"]
    assert "exception" not in error
    assert not any(r["message"] == "serving" for r in records)
