"""What the benchmark sends: its scenarios, as load-generator run configurations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.config import RunConfig
from loadtest.scenarios.generate import (
    INTERPOLATION_STEPS,
    SCORE_SAMPLES,
    SEED,
    STREAM_CHUNK_ROWS,
    STREAM_LOAD,
    STREAM_ROWS,
    VARIATIONS_COUNT,
    tensor,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO = REPO_ROOT / "protos" / "vae" / "v1" / "vae.proto"
SAMPLE_1_CONCURRENCY = (1, 8, 32, 64, 128)
# Open loop: calls arrive on a fixed schedule, as from many independent callers, and latency
# counts from each call's due time. The rates stay below what one client core can send on
# schedule here (about 2,800 calls/s, where even the floor's tail grows).
OPEN_LOOP_RATES = (1000, 2000)
# The most calls an open-loop run keeps in flight: far above what the servers hold at these
# rates, so a server that falls behind shows it in its latency, not in a refused arrival.
OPEN_LOOP_IN_FLIGHT = 256
# The latent-space RPCs, alone and under 32 callers, sized as their ghz scenario files.
LATENT_CONCURRENCY = (1, 32)
# Unary Sample 1 at this many callers, alone and with this many SampleStream calls running
# beside it (bench.streams): what streams, whose chunks share the decoder's batcher, cost it.
BESIDE_STREAMS_CONCURRENCY = 8
BACKGROUND_STREAMS = 2


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    rows: int  # rows each call runs through the graphs, both graphs' added up
    concurrency: int
    rps: float = 0.0  # arrivals per second: open loop; 0 for closed loop
    # A latent-space RPC's rows per call, encoded first, then decoded. Those scenarios run on
    # the service alone (the floors answer Sample and Encode only) and are compared with
    # onnxruntime in-process running the same rows (bench.compute.measure_latent).
    encoder_rows: int = 0
    decoder_rows: int = 0
    output_dtype: str = "FLOAT32"  # Sample's and SampleStream's images: FLOAT32 or UINT8
    chunk_rows: int = 0  # SampleStream's rows per chunk; `rows` is the whole stream's
    # The Sample scenarios measured with SampleStream calls in the background: how many (0 for
    # the same load alone); None for every other scenario.
    background_streams: int | None = None

    @property
    def open_loop(self) -> bool:
        return self.rps > 0

    @property
    def latent(self) -> bool:
        return self.encoder_rows > 0

    @property
    def streaming(self) -> bool:
        return self.method == "SampleStream"

    @property
    def service_only(self) -> bool:
        """Whether only the service can run it: the floors answer unary Sample and Encode
        alone, and the comparison with streams needs streams beside it."""
        return self.latent or self.streaming or self.background_streams is not None

    def encoder_images(self) -> np.ndarray:
        """The held-out digits each call encodes, uint8 (encoder_rows, 784)."""
        return held_out_images(self.encoder_rows)

    def data(self) -> dict:
        if self.method == "Sample":
            # FLOAT32 is the default: those requests stay as they were, without the field.
            dtype = {} if self.output_dtype == "FLOAT32" else {"outputDtype": self.output_dtype}
            return {"count": self.rows, **dtype}
        if self.streaming:
            return {"count": str(self.rows), "seed": SEED, "chunkRows": self.chunk_rows,
                    "outputDtype": self.output_dtype}
        if self.method == "Interpolate":
            start, end = (tensor(image[None], "UINT8") for image in self.encoder_images())
            return {"start": {"image": start}, "end": {"image": end},
                    "steps": self.decoder_rows, "path": "PATH_SPHERICAL"}
        if self.method == "Variations":
            return {"images": tensor(self.encoder_images(), "UINT8"),
                    "count": self.decoder_rows // self.encoder_rows, "seed": SEED}
        if self.method == "Score":
            return {"images": tensor(self.encoder_images(), "UINT8"),
                    "samples": self.decoder_rows // self.encoder_rows, "seed": SEED}
        return {"images": tensor(held_out_images(self.rows), "UINT8")}

    def connections(self, requested: int, procs: int = 1) -> int:
        """The connections a run opens: as requested, but at least one per load process and
        at most one per caller (a connection needs a caller to carry anything)."""
        return min(self.concurrency, max(requested, procs))

    def run_config(self, target: str, duration_s: float, procs: int,
                   connections: int = 1) -> RunConfig:
        return RunConfig(
            call=f"vae.v1.VAEService.{self.method}", host=target, data=(self.data(),),
            proto=str(PROTO), import_paths=(str(PROTO.parents[2]),), insecure=True,
            concurrency=self.concurrency, connections=self.connections(connections, procs),
            # "wait": the calls in flight at the end count, rather than as cut errors.
            duration_s=duration_s, duration_stop="wait", timeout_s=30.0,
            procs=min(procs, self.concurrency),
            rps=self.rps, name=self.name,
        )


def held_out_images(rows: int) -> np.ndarray:
    """The first held-out digits, uint8 (rows, 784)."""
    with np.load(REPO_ROOT / "data" / "mnist10k.npz") as archive:
        return archive["images"][archive["split"] == 1][:rows]


def latent_scenario(method: str, size: str, encoder_rows: int, decoder_rows: int,
                    concurrency: int) -> Scenario:
    return Scenario(f"{method} {size}, c={concurrency}", method, encoder_rows + decoder_rows,
                    concurrency, encoder_rows=encoder_rows, decoder_rows=decoder_rows)


SCENARIOS = (
    *(Scenario(f"Sample count 1, c={c}", "Sample", 1, c) for c in SAMPLE_1_CONCURRENCY),
    *(Scenario(f"Sample count {n}, c=4", "Sample", n, 4) for n in (64, 1024, 4096)),
    *(Scenario(f"Sample count {n}, c=4, UINT8", "Sample", n, 4, output_dtype="UINT8")
      for n in (1024, 4096)),
    Scenario("Encode count 1, c=32", "Encode", 1, 32),
    *(Scenario(f"Sample count 1, {rate:,}/s open loop", "Sample", 1, OPEN_LOOP_IN_FLIGHT, rate)
      for rate in OPEN_LOOP_RATES),
    # Interpolate encodes its two image endpoints together, then decodes the steps; Variations
    # and Score encode one digit, then decode its count or samples.
    *(latent_scenario("Interpolate", f"{INTERPOLATION_STEPS} steps", 2, INTERPOLATION_STEPS, c)
      for c in LATENT_CONCURRENCY),
    *(latent_scenario("Variations", f"count {VARIATIONS_COUNT}", 1, VARIATIONS_COUNT, c)
      for c in LATENT_CONCURRENCY),
    *(latent_scenario("Score", f"{SCORE_SAMPLES} samples", 1, SCORE_SAMPLES, c)
      for c in LATENT_CONCURRENCY),
    # As the ghz file: seeded streams of STREAM_ROWS rows, two at a time; a call is a stream.
    *(Scenario(f"SampleStream chunk {STREAM_CHUNK_ROWS}, {dtype}", "SampleStream", STREAM_ROWS,
               STREAM_LOAD["concurrency"], output_dtype=dtype, chunk_rows=STREAM_CHUNK_ROWS)
      for dtype in ("FLOAT32", "UINT8")),
    # Back to back, so that the machine's background load touches both alike.
    Scenario(f"Sample count 1, c={BESIDE_STREAMS_CONCURRENCY}, no streams", "Sample", 1,
             BESIDE_STREAMS_CONCURRENCY, background_streams=0),
    Scenario(f"Sample count 1, c={BESIDE_STREAMS_CONCURRENCY}, two streams running", "Sample", 1,
             BESIDE_STREAMS_CONCURRENCY, background_streams=BACKGROUND_STREAMS),
)
