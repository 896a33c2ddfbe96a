"""Write the ghz scenario files of this folder from the data, so that they are reproducible.

    python -m loadtest.scenarios.generate [--data data/mnist10k.npz]

Encode, Reconstruct, Variations and Score send real held-out digits: the first held-out image
of each class 0-9, round-robin (ghz sends the elements of a data array in turn); Interpolate goes
from each of them to the next class's. Tensors are protobuf JSON: `data` in base64, `dtype` by
enum name, the int64 `shape` and uint64 `seed` as strings (proto3 JSON's canonical form); enums
by name (`"PATH_SPHERICAL"`), a oneof by the name of its field (`{"image": ...}`).
No file names a .proto: ghz then asks the server's reflection; give `--proto` to use the file.
"""

import argparse
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.scenarios import SCENARIO_DIR

HELD_OUT = 1  # data/mnist10k.npz `split` value of the held-out digits
HOST = "127.0.0.1:50051"
# Points of the 2-d latent space to decode: the prior's centre and a ring about one sd out.
LATENTS = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0), (0.7, 0.7), (-0.7, -0.7)]
# The latent-space RPCs' sizes: the rows each call runs are 2 encoded + 8 decoded (Interpolate),
# 1 + 8 (Variations) and 1 + 16 (Score).
INTERPOLATION_STEPS = 8
VARIATIONS_COUNT = 8
SCORE_SAMPLES = 16
# Seeded, so that every call of a run does the same work and its answers can be compared.
SEED = "7"
# SampleStream: a dataset of STREAM_ROWS digits, UINT8 as a dataset is stored, in chunks of the
# server's default (and largest) chunk size. 49 chunks make a stream long enough that its rate is
# the steady one, not its first chunk's; two streams at a time, ten in all, are 500,000 rows:
# about 2 s on 2 cores, each stream well within the files' 10 s timeout, which ghz applies to
# the whole stream.
STREAM_ROWS = 50_000
STREAM_CHUNK_ROWS = 1024
STREAM_LOAD = {"concurrency": 2, "total": 10}


def tensor(array: np.ndarray, dtype: str) -> dict[str, Any]:
    """A vae.v1.Tensor in protobuf JSON: little-endian row-major bytes in base64."""
    little_endian = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return {
        "shape": [str(size) for size in array.shape],
        "dtype": dtype,
        "data": base64.b64encode(little_endian.tobytes()).decode("ascii"),
    }


def held_out_digits(data_path: Path) -> np.ndarray:
    """The first held-out image of each class, in class order, uint8 (10, 784)."""
    with np.load(data_path) as data:
        images, labels, split = data["images"], data["labels"], data["split"]
    held_out = np.flatnonzero(split == HELD_OUT)
    firsts = [held_out[labels[held_out] == digit][0] for digit in range(10)]
    return images[firsts]


def scenario(name: str, method: str, load: dict[str, Any], data: Any) -> dict[str, Any]:
    """One ghz config: what it is, the load, where to, then the call data."""
    return {
        "name": name,
        "call": f"vae.v1.VAEService.{method}",
        **load,
        # When a duration ends (the file's or a -z flag's), ghz's default "close" cuts the calls
        # in flight and counts each as an Unavailable error; "wait" lets them finish and counts
        # them. ghz reads it only for a timed run, so every file carries it.
        "duration-stop": "wait",
        "timeout": "10s",
        "host": HOST,
        "insecure": True,
        "connections": 1,
        "data": data,
    }


def scenarios(digits: np.ndarray) -> dict[str, dict[str, Any]]:
    """Every scenario's ghz config, by file stem."""
    as_uint8 = [{"images": tensor(d.reshape(1, 784), "UINT8")} for d in digits]
    as_float = [
        {"images": tensor((d.reshape(1, 28, 28) / 255).astype(np.float32), "FLOAT32")}
        for d in digits
    ]
    latents = [
        {"latents": tensor(np.array([point], dtype=np.float32), "FLOAT32")} for point in LATENTS
    ]
    interpolations = [
        {
            "start": {"image": tensor(start.reshape(28, 28), "UINT8")},
            "end": {"image": tensor(end.reshape(28, 28), "UINT8")},
            "steps": INTERPOLATION_STEPS,
            "path": "PATH_SPHERICAL",
        }
        for start, end in zip(digits, np.roll(digits, -1, axis=0), strict=True)
    ]
    closed_loop = {"concurrency": 32, "total": 5000}
    latent_load = {"concurrency": 32, "total": 2000}
    return {
        "sample-1": scenario("Sample count 1", "Sample", closed_loop, {"count": 1}),
        "sample-64": scenario(
            "Sample count 64", "Sample", {"concurrency": 8, "total": 1000}, {"count": 64}
        ),
        "sample-1-uint8": scenario(
            "Sample count 1, UINT8 images", "Sample", closed_loop,
            {"count": 1, "outputDtype": "UINT8"},
        ),
        "sample-64-uint8": scenario(
            "Sample count 64, UINT8 images", "Sample", {"concurrency": 8, "total": 1000},
            {"count": 64, "outputDtype": "UINT8"},
        ),
        "sample-stream": scenario(
            f"SampleStream of {STREAM_ROWS:,} UINT8 digits, {STREAM_CHUNK_ROWS:,} a chunk",
            "SampleStream",
            STREAM_LOAD,
            {
                # uint64 fields as strings, proto3 JSON's canonical form
                "count": str(STREAM_ROWS),
                "seed": SEED,
                "chunkRows": STREAM_CHUNK_ROWS,
                "outputDtype": "UINT8",
            },
        ),
        "encode": scenario("Encode one held-out digit (uint8)", "Encode", closed_loop, as_uint8),
        "reconstruct": scenario(
            "Reconstruct one held-out digit (float32, 28x28)",
            "Reconstruct",
            {"concurrency": 16, "duration": "10s"},
            as_float,
        ),
        "decode": scenario("Decode one latent point", "Decode", closed_loop, latents),
        "interpolate": scenario(
            f"Interpolate between two held-out digits, {INTERPOLATION_STEPS} steps",
            "Interpolate",
            latent_load,
            interpolations,
        ),
        "variations": scenario(
            f"Variations of one held-out digit (uint8), count {VARIATIONS_COUNT}",
            "Variations",
            latent_load,
            [{**item, "count": VARIATIONS_COUNT, "seed": SEED} for item in as_uint8],
        ),
        "score": scenario(
            f"Score one held-out digit (uint8), {SCORE_SAMPLES} samples",
            "Score",
            latent_load,
            [{**item, "samples": SCORE_SAMPLES, "seed": SEED} for item in as_uint8],
        ),
    }


def write_scenarios(data_path: Path, out_dir: Path = SCENARIO_DIR) -> list[Path]:
    """Write one `<stem>.json` per scenario into `out_dir`; return their paths."""
    paths = []
    for stem, config in scenarios(held_out_digits(data_path)).items():
        path = out_dir / f"{stem}.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        paths.append(path)
    return paths


def main() -> None:
    """Parse the flags and write the files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/mnist10k.npz"))
    args = parser.parse_args()
    for path in write_scenarios(args.data):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
