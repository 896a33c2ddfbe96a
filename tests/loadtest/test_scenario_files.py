"""The shipped ghz scenario files: reproducible, in ghz's format, with real held-out digits."""

import base64
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from vae.v1 import vae_pb2

from loadtest.config import read_ghz_config
from loadtest.payload import serialize_requests
from loadtest.scenarios import scenario_files
from loadtest.scenarios.generate import (
    HELD_OUT,
    STREAM_CHUNK_ROWS,
    STREAM_LOAD,
    STREAM_ROWS,
    write_scenarios,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "mnist10k.npz"
SERVICE = vae_pb2.DESCRIPTOR.services_by_name["VAEService"]
FILES = scenario_files()


def test_every_documented_scenario_is_shipped() -> None:
    configs = [json.loads(path.read_text()) for path in FILES]
    calls = [config["call"] for config in configs]
    samples = [c["data"] for c in configs if c["call"].endswith(".Sample")]
    methods = ("Decode", "Encode", "Reconstruct", *["Sample"] * 4, "SampleStream", "Interpolate",
               "Variations", "Score")
    assert sorted(calls) == sorted(f"vae.v1.VAEService.{m}" for m in methods)
    # Each count in FLOAT32 (the default) and in UINT8.
    assert sorted((d["count"], d.get("outputDtype", "FLOAT32")) for d in samples) == [
        (1, "FLOAT32"), (1, "UINT8"), (64, "FLOAT32"), (64, "UINT8")
    ]


def test_the_files_are_what_the_generator_writes(tmp_path) -> None:
    written = write_scenarios(DATA, tmp_path)
    assert {path.name: path.read_text() for path in written} == {
        path.name: path.read_text() for path in FILES
    }


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_each_file_is_a_complete_ghz_config(path: Path) -> None:
    raw = json.loads(path.read_text())
    # No "proto": ghz then uses server reflection, and `--proto` switches to the file.
    assert "proto" not in raw
    assert raw["insecure"] is True
    assert "timeout" in raw and "concurrency" in raw
    assert ("total" in raw) != ("duration" in raw)
    # A duration's end (the file's or -z's) lets the calls in flight finish, not fail.
    assert raw["duration-stop"] == "wait"
    settings = read_ghz_config(path)
    assert settings["duration_stop"] == "wait"
    method = SERVICE.methods_by_name[settings["call"].rsplit(".", 1)[1]]
    requests = serialize_requests(method, settings["data"])
    assert len(requests) == len(settings["data"])


@functools.cache
def held_out() -> tuple[np.ndarray, np.ndarray]:
    """The held-out digits and their labels."""
    with np.load(DATA) as data:
        return data["images"][data["split"] == HELD_OUT], data["labels"][data["split"] == HELD_OUT]


def held_out_class(tensor: dict, what: str) -> int:
    """The class of the held-out digit a protobuf-JSON image Tensor holds; fails if none."""
    images, labels = held_out()
    dtype = np.uint8 if tensor["dtype"] == "UINT8" else np.dtype("<f4")
    image = np.frombuffer(base64.b64decode(tensor["data"]), dtype).reshape(1, 784)
    pixels = np.rint(image * 255).astype(np.uint8) if dtype != np.uint8 else image
    matches = np.flatnonzero((images == pixels).all(axis=1))
    assert matches.size, f"{what}: an image is not a held-out digit"
    return int(labels[matches[0]])


@pytest.mark.parametrize("stem", ["encode", "reconstruct", "variations", "score"])
def test_images_are_held_out_digits_one_per_class(stem: str) -> None:
    call = json.loads((FILES[0].parent / f"{stem}.json").read_text())
    classes = [held_out_class(item["images"], stem) for item in call["data"]]
    assert classes == list(range(10))


def test_interpolations_go_from_each_class_to_the_next_on_the_spherical_path() -> None:
    call = json.loads((FILES[0].parent / "interpolate.json").read_text())
    pairs = [
        (held_out_class(item["start"]["image"], "start"),
         held_out_class(item["end"]["image"], "end"))
        for item in call["data"]
    ]
    assert pairs == [(digit, (digit + 1) % 10) for digit in range(10)]
    # By name, as protobuf's JSON writes enums; ghz and our generator both read it so.
    assert {item["path"] for item in call["data"]} == {"PATH_SPHERICAL"}
    request = vae_pb2.InterpolateRequest.FromString(
        serialize_requests(SERVICE.methods_by_name["Interpolate"], call["data"][:1])[0]
    )
    assert request.path == vae_pb2.PATH_SPHERICAL and request.steps == 8
    assert request.start.WhichOneof("point") == request.end.WhichOneof("point") == "image"


@pytest.mark.parametrize(("stem", "per_image"), [("variations", "count"), ("score", "samples")])
def test_seeded_latent_scenarios_send_the_same_draws_every_call(stem: str, per_image: str) -> None:
    call = json.loads((FILES[0].parent / f"{stem}.json").read_text())
    request_type = getattr(vae_pb2, f"{call['call'].rsplit('.', 1)[1]}Request")
    method = SERVICE.methods_by_name[call["call"].rsplit(".", 1)[1]]
    requests = [request_type.FromString(raw) for raw in serialize_requests(method, call["data"])]
    assert {request.seed for request in requests if request.HasField("seed")} == {7}
    assert len({getattr(request, per_image) for request in requests}) == 1
    assert all(getattr(request, per_image) > 1 for request in requests)


@pytest.mark.parametrize("stem", ["sample-1-uint8", "sample-64-uint8"])
def test_the_uint8_files_ask_for_uint8_images(stem: str) -> None:
    settings = read_ghz_config(FILES[0].parent / f"{stem}.json")
    (request,) = serialize_requests(SERVICE.methods_by_name["Sample"], settings["data"])
    assert vae_pb2.SampleRequest.FromString(request).output_dtype == vae_pb2.UINT8


def test_the_stream_file_reads_a_seeded_uint8_dataset_in_full_chunks() -> None:
    settings = read_ghz_config(FILES[0].parent / "sample-stream.json")
    method = SERVICE.methods_by_name["SampleStream"]
    assert method.server_streaming  # ghz counts one call per stream, read to its end
    (raw,) = serialize_requests(method, settings["data"])
    request = vae_pb2.SampleStreamRequest.FromString(raw)
    assert (request.count, request.chunk_rows) == (STREAM_ROWS, STREAM_CHUNK_ROWS)
    assert request.output_dtype == vae_pb2.UINT8
    assert request.HasField("seed") and request.start_index == 0
    assert (settings["concurrency"], settings["total"]) == tuple(STREAM_LOAD.values())
    # Streams long enough that their rate is the steady one: many chunks each.
    assert STREAM_ROWS // STREAM_CHUNK_ROWS >= 40
