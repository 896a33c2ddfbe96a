"""Model roll-out while serving: a newer version is swapped in, a broken one refused.

In process, ModelReloader on a copy of the bundled model: a newer version directory is loaded
and swapped in, removing it rolls back, and a broken one is refused, counted once per change of
its files, while the old version serves on. End to end, under load: a new version (found by
polling, or on SIGHUP) is swapped in with no failed request, every answer after the swap
carries its version, and broken versions are rejected one after another, each with a log line
naming the reason and one count in `vae_model_reload_total{result="failure"}`.
"""

import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.model import ModelHolder, load_model, newest_version_dir
from service.reload import ModelReloader
from tests.model_versions import copy_version, corruptions, publish
from tests.traffic import Traffic, seeded_requests

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def served_models(model_dir: Path, tmp_path: Path) -> Path:
    """A model directory holding a copy of the bundled model as version 1."""
    root = tmp_path / "models"
    copy_version(model_dir, root, "1")
    return root


@dataclass
class InProcess:
    """A ModelReloader on `root`, the holder it swaps models in, and its metrics' registry."""

    root: Path
    reloader: ModelReloader
    holder: ModelHolder
    registry: CollectorRegistry

    def reloads(self, result: str) -> float | None:
        return self.registry.get_sample_value("vae_model_reload_total", {"result": result})

    def serving(self) -> str:
        return self.holder.current.version


@pytest.fixture
def in_process(served_models: Path) -> InProcess:
    holder = ModelHolder(load_model(newest_version_dir(served_models), 1))
    registry = CollectorRegistry()
    reloader = ModelReloader(
        served_models, holder, Metrics(registry), intra_op_threads=1, warmup_rows=1
    )
    return InProcess(served_models, reloader, holder, registry)


def test_a_newer_version_directory_is_loaded_swapped_in_and_counted(
    in_process, model_dir
) -> None:
    first = in_process.holder.current
    assert in_process.reloader.reload() is False  # nothing new
    assert in_process.holder.current is first
    assert (in_process.reloads("success"), in_process.reloads("failure")) == (0, 0)

    publish(model_dir, in_process.root, "2")
    assert in_process.reloader.reload() is True
    assert in_process.serving() == "2"
    assert (in_process.reloads("success"), in_process.reloads("failure")) == (1, 0)
    info = {"name": first.name, "version": "2"}
    assert in_process.registry.get_sample_value("vae_model_info", info) == 1

    second = in_process.holder.current
    assert in_process.reloader.reload() is False  # the newest already serves
    assert in_process.holder.current is second
    # SIGHUP forces a reload, even of the version that serves.
    assert in_process.reloader.reload(force=True) is True
    assert in_process.holder.current is not second and in_process.serving() == "2"
    assert in_process.reloads("success") == 2


def test_removing_the_newest_version_rolls_back_to_the_one_before(in_process, model_dir) -> None:
    newest = publish(model_dir, in_process.root, "2")
    assert in_process.reloader.reload() is True
    shutil.rmtree(newest)
    assert in_process.reloader.reload() is True
    assert in_process.serving() == "1"


def test_a_broken_version_is_refused_and_counted_once_per_change_of_its_files(
    in_process, model_dir
) -> None:
    first = in_process.holder.current
    broken = publish(model_dir, in_process.root, "2",
                     lambda d: (d / "encoder.onnx").write_bytes(b"broken"))
    assert in_process.reloader.reload() is False
    assert in_process.holder.current is first
    assert (in_process.reloads("success"), in_process.reloads("failure")) == (0, 1)
    # The poller looks again and again: unchanged files are not loaded nor counted again...
    assert in_process.reloader.reload() is False
    assert in_process.reloads("failure") == 1
    # ...files that changed are, and so is every SIGHUP.
    (broken / "encoder.onnx").write_bytes(b"broken again")
    assert in_process.reloader.reload() is False
    assert in_process.reloads("failure") == 2
    assert in_process.reloader.reload(force=True) is False
    assert in_process.reloads("failure") == 3
    assert in_process.holder.current is first
    # Mended, it is picked up.
    (broken / "encoder.onnx").write_bytes((model_dir / "1" / "encoder.onnx").read_bytes())
    assert in_process.reloader.reload() is True
    assert in_process.serving() == "2"
    assert (in_process.reloads("success"), in_process.reloads("failure")) == (1, 3)


def assert_versions_move_forward(traffic: Traffic, old: str, new: str) -> None:
    """Each caller saw the old version, then only the new one."""
    for log in traffic.logs:
        switch = log.versions.index(new)
        assert set(log.versions[:switch]) == {old} and set(log.versions[switch:]) == {new}


@pytest.mark.parametrize("trigger", ["poll", "SIGHUP"])
def test_a_new_version_is_swapped_in_under_load_without_a_failed_request(
    start_vae_server, served_models, model_dir, heldout, trigger
) -> None:
    server = start_vae_server(
        VAE_MODEL_DIR=str(served_models),
        VAE_MODEL_POLL_SECONDS="0.1" if trigger == "poll" else "0",
    )
    with Traffic(server.target, seeded_requests(heldout), callers=3) as traffic:
        traffic.wait_answered(1)
        publish(model_dir, served_models, "2")
        if trigger == "SIGHUP":
            server.signal(signal.SIGHUP)
        swapped = server.wait_for_log("model swapped", timeout=60)
        traffic.wait_answered(len(traffic.calls))
    assert (swapped["old_version"], swapped["new_version"]) == ("1", "2")
    traffic.assert_clean()
    assert_versions_move_forward(traffic, "1", "2")
    assert server.metric("vae_model_info", version="2") == 1
    assert server.metric("vae_model_reload_total", result="success") == 1
    assert server.metric("vae_model_reload_total", result="failure") == 0


def test_broken_versions_are_rejected_under_load_while_the_old_one_serves(
    start_vae_server, served_models, model_dir, heldout
) -> None:
    server = start_vae_server(VAE_MODEL_DIR=str(served_models), VAE_MODEL_POLL_SECONDS="0.1")
    cases = corruptions()
    with Traffic(server.target, seeded_requests(heldout), callers=2) as traffic:
        for number, (name, break_it, reason) in enumerate(cases, start=1):
            publish(model_dir, served_models, str(1 + number), break_it)
            server.wait_for_metric("vae_model_reload_total", number, result="failure")
            # The counter may move before the line is logged: wait for this version's line.
            rejection = server.wait_for_log("model reload rejected", occurrence=number)
            assert reason in rejection["reason"], (name, rejection)
            assert "\n" not in rejection["reason"] and "exception" not in rejection, name
            assert rejection["serving_version"] == "1"
            traffic.wait_answered(1)
        assert {v for log in traffic.logs for v in log.versions} == {"1"}
        # A good version after them all is still picked up; each broken one counted once.
        good = str(len(cases) + 2)
        publish(model_dir, served_models, good)
        server.wait_for_log("model swapped", timeout=60)
        traffic.wait_answered(len(traffic.calls))
    traffic.assert_clean()
    assert_versions_move_forward(traffic, "1", good)
    assert server.metric("vae_model_reload_total", result="failure") == len(cases)
    assert server.metric("vae_model_reload_total", result="success") == 1
