"""`make latent-report`: the latent-space RPCs on the real service, measured and pictured.

Starts `python -m service` on the bundled model and, over gRPC:

1. scores the held-out digits (the split the model was evaluated on, data/README.md) and as
   many inputs unlike them (bench.anomaly) with Score at K = 1, 16 and 128, and reports how
   well -log p separates them: the ROC AUC for the ELBO and for the bound at each K, with the
   held-out digits as the normal class, and the bound's mean gain over the ELBO;
2. draws docs/score-distributions.png, a morph between two held-out digits with Interpolate
   (docs/morph.png) and variations of three held-out digits with Variations
   (docs/variations.png).

Everything is seeded: a rerun on the same model writes the same figures and pictures.

    python -m bench.latent_report [--count 999] [--seed 7] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from vae.v1 import vae_pb2, vae_pb2_grpc

from bench import latent_pictures
from bench.anomaly import DIGITS, UNLIKE_KINDS, Scores, separation, unlike_inputs
from bench.scenarios import REPO_ROOT
from bench.servers import start_server
from export.data import load_splits_or_exit
from service.tensors import from_proto, to_proto

DOCS = REPO_ROOT / "docs"
REPORT_NAME = "latent_report.json"
SAMPLES = (1, 16, 128)
# Every call carries a deadline; without one, nothing bounds a stuck call.
RPC_TIMEOUT_S = 60.0
MORPH_CLASSES = (1, 0)
MORPH_STEPS = 10
VARIATION_CLASSES = (0, 3, 6)
VARIATION_COUNT = 8
TEMPERATURES = (0.5, 1.0, 2.0)


def score(stub: vae_pb2_grpc.VAEServiceStub, images: np.ndarray, samples: int, seed: int,
          max_request_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The ELBO and the K = `samples` bound of each (N, pixels) image, in as many Score calls as
    the row limit asks. Call i has seed `seed` + i, so the k-th image of every call, whatever
    its kind, gets the same draws."""
    per_call = max(1, max_request_rows // samples)
    elbo, bound = [], []
    for call, first in enumerate(range(0, len(images), per_call)):
        request = vae_pb2.ScoreRequest(images=to_proto(images[first:first + per_call]),
                                       samples=samples, seed=seed + call)
        response = stub.Score(request, timeout=RPC_TIMEOUT_S)
        elbo.append(np.array(response.elbo, np.float64))
        bound.append(np.array(response.log_likelihood, np.float64))
    return np.concatenate(elbo), np.concatenate(bound)


def score_inputs(stub: vae_pb2_grpc.VAEServiceStub, inputs: dict[str, np.ndarray],
                 samples: Sequence[int], seed: int, max_request_rows: int,
                 progress: bool = True) -> dict[str, Scores]:
    """Every kind of input scored at every K; with `progress`, a line as each is done."""
    scores = {kind: Scores({}, {}) for kind in inputs}
    steps = [(k, kind) for k in samples for kind in inputs]
    for step, (k, kind) in enumerate(steps, 1):
        started = time.monotonic()
        scores[kind].elbo[k], scores[kind].bound[k] = score(
            stub, inputs[kind], k, seed, max_request_rows)
        if progress:
            print(f"  [{step}/{len(steps)}] Score K={k:<3} {kind}: {len(inputs[kind])} images "
                  f"in {time.monotonic() - started:.1f} s", flush=True)
    return scores


def print_table(figures: dict[str, Any]) -> None:
    """The AUC table, then the mean -log p and the bound's gain per kind, in markdown."""
    samples = list(figures["gain_nats"][DIGITS])
    most = samples[-1]
    print(f"\nROC AUC, {DIGITS} (normal) against each kind; score -log p\n")
    print(f"| input | ELBO (K={most} draws) | "
          + " | ".join(f"bound K={k}" for k in samples) + " |")
    print("|---|---:|" + "---:|" * len(samples))
    for kind, auc in figures["auc"].items():
        print(f"| {kind} | {auc['elbo'][most]:.5f} | "
              + " | ".join(f"{auc['bound'][k]:.5f}" for k in samples) + " |")
    print(f"\nMean -log p in nats, and the bound's mean gain over the ELBO (K={most} draws)\n")
    print("| input | -ELBO | " + " | ".join(f"-bound K={k}" for k in samples) + " | "
          + " | ".join(f"gain K={k}" for k in samples) + " |")
    print("|---|---:|" + "---:|" * 2 * len(samples))
    for kind, means in figures["mean_neg_log_p_nats"].items():
        gain = figures["gain_nats"][kind]
        print(f"| {kind} | {means['elbo'][most]:.1f} | "
              + " | ".join(f"{means['bound'][k]:.1f}" for k in samples) + " | "
              + " | ".join(f"{gain[k]:.2f}" for k in samples) + " |")


def first_of_each(labels: np.ndarray, classes: Sequence[int]) -> list[int]:
    """The index of the first image of each class, in the order given."""
    return [int(np.flatnonzero(labels == digit)[0]) for digit in classes]


def morph(stub: vae_pb2_grpc.VAEServiceStub, start: np.ndarray, end: np.ndarray,
          steps: int) -> dict[str, np.ndarray]:
    """Interpolate between two (pixels,) images, encoded by the server: the (steps, 28, 28)
    images of the linear and the spherical path."""
    paths = {"linear": vae_pb2.PATH_LINEAR, "spherical": vae_pb2.PATH_SPHERICAL}
    return {
        name: from_proto(stub.Interpolate(vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(image=to_proto(start)),
            end=vae_pb2.Endpoint(image=to_proto(end)), steps=steps, path=path,
        ), timeout=RPC_TIMEOUT_S).images)
        for name, path in paths.items()
    }


def variations(stub: vae_pb2_grpc.VAEServiceStub, images: np.ndarray, count: int,
               temperatures: Sequence[float], seed: int) -> dict[float, np.ndarray]:
    """`count` variations of each (N, pixels) image at each temperature, with one seed:
    (N, count, 28, 28) per temperature."""
    return {
        temperature: from_proto(stub.Variations(vae_pb2.VariationsRequest(
            images=to_proto(images), count=count, temperature=temperature, seed=seed,
        ), timeout=RPC_TIMEOUT_S).images)
        for temperature in temperatures
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure and picture the latent-space RPCs.")
    parser.add_argument("--count", type=int, default=999,
                        help="held-out digits scored, and inputs of each unlike kind")
    parser.add_argument("--seed", type=int, default=7,
                        help="seed of the unlike inputs, the Score draws and the variations")
    parser.add_argument("--out", type=Path, default=DOCS,
                        help="directory of latent_report.json and the pictures")
    args = parser.parse_args(argv)
    held_out = load_splits_or_exit().held_out
    digits = held_out.images[:args.count]
    inputs = {DIGITS: digits, **unlike_inputs(digits, args.seed)}
    start, end = first_of_each(held_out.labels, MORPH_CLASSES)
    varied_digits = held_out.images[first_of_each(held_out.labels, VARIATION_CLASSES)]
    print(f"{len(digits)} {DIGITS} and as many of each of {', '.join(UNLIKE_KINDS)}; "
          f"starting python -m service", flush=True)
    with start_server("service", "service", os.sched_getaffinity(0)) as server, \
            grpc.insecure_channel(server.target) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)
        info = stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=RPC_TIMEOUT_S)
        scores = score_inputs(stub, inputs, SAMPLES, args.seed, info.max_request_rows)
        morphs = morph(stub, held_out.images[start], held_out.images[end], MORPH_STEPS)
        varied = variations(stub, varied_digits, VARIATION_COUNT, TEMPERATURES, args.seed)
    figures = separation(scores)
    report = {
        "model": {"name": info.name, "version": info.version,
                  "encoder_sha256": info.encoder_sha256, "decoder_sha256": info.decoder_sha256,
                  "training_metrics": dict(sorted(info.training_metrics.items()))},
        "settings": {"count_per_kind": len(digits), "seed": args.seed, "samples": list(SAMPLES),
                     "noise": "uniform U(0, 1)", "shuffled": "one permutation per image",
                     "inverted": "1 - x"},
        **figures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / REPORT_NAME
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    print_table(figures)
    written = [
        report_path,
        latent_pictures.score_distributions(scores, max(SAMPLES),
                                            args.out / "score-distributions.png"),
        latent_pictures.morph_strip(morphs, MORPH_CLASSES, args.out / "morph.png"),
        latent_pictures.variation_grid(varied_digits, varied, VARIATION_CLASSES,
                                       args.out / "variations.png"),
    ]
    print("\nwrote " + ", ".join(os.path.relpath(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
