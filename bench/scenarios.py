"""What the benchmark sends: the issue's scenarios, as load-generator run configurations."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.config import RunConfig

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


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    rows: int
    concurrency: int
    rps: float = 0.0  # arrivals per second: open loop; 0 for closed loop
    output_dtype: str = "FLOAT32"  # Sample's images: FLOAT32 or UINT8

    @property
    def open_loop(self) -> bool:
        return self.rps > 0

    def data(self) -> dict:
        if self.method == "Sample":
            # FLOAT32 is the default: those requests stay as they were, without the field.
            dtype = {} if self.output_dtype == "FLOAT32" else {"outputDtype": self.output_dtype}
            return {"count": self.rows, **dtype}
        return {"images": held_out_digits(self.rows)}

    def run_config(self, target: str, duration_s: float, procs: int) -> RunConfig:
        return RunConfig(
            call=f"vae.v1.VAEService.{self.method}", host=target, data=(self.data(),),
            proto=str(PROTO), import_paths=(str(PROTO.parents[2]),), insecure=True,
            concurrency=self.concurrency, connections=min(self.concurrency, procs),
            # "wait": the calls in flight at the end count, rather than as cut errors.
            duration_s=duration_s, duration_stop="wait", timeout_s=30.0,
            procs=min(procs, self.concurrency),
            rps=self.rps, name=self.name,
        )


def held_out_digits(rows: int) -> dict:
    """The first held-out digits as a UINT8 Tensor in protobuf JSON."""
    with np.load(REPO_ROOT / "data" / "mnist10k.npz") as archive:
        images = archive["images"][archive["split"] == 1][:rows]
    return {"shape": [rows, 784], "dtype": "UINT8",
            "data": base64.b64encode(images.tobytes()).decode()}


SCENARIOS = (
    *(Scenario(f"Sample count 1, c={c}", "Sample", 1, c) for c in SAMPLE_1_CONCURRENCY),
    *(Scenario(f"Sample count {n}, c=4", "Sample", n, 4) for n in (64, 1024, 4096)),
    *(Scenario(f"Sample count {n}, c=4, UINT8", "Sample", n, 4, output_dtype="UINT8")
      for n in (1024, 4096)),
    Scenario("Encode count 1, c=32", "Encode", 1, 32),
    *(Scenario(f"Sample count 1, {rate:,}/s open loop", "Sample", 1, OPEN_LOOP_IN_FLIGHT, rate)
      for rate in OPEN_LOOP_RATES),
)
