"""`make model`: data -> train -> export -> check -> pictures -> model.json, end to end.

    python -m export.pipeline [--version 1] [--out models/vae-mnist] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from export import convert_mnist
from export.data import DEFAULT_DATA_PATH, REPO_ROOT, load_splits_or_exit
from export.manifest import write_manifest
from export.onnx_export import check_graphs, export_graphs
from export.pictures import draw_all
from export.train import TrainConfig, train

MODEL_NAME = "vae-mnist"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train, export and check the default model.")
    parser.add_argument("--version", default="1")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models" / MODEL_NAME)
    parser.add_argument("--epochs", type=int, help="override the tuned default (quick checks)")
    args = parser.parse_args(argv)

    if not DEFAULT_DATA_PATH.exists():
        print("step 1/5: converting the MNIST subset", flush=True)
        convert_mnist.main([])
    data = load_splits_or_exit()
    config = TrainConfig() if args.epochs is None else replace(TrainConfig(), epochs=args.epochs)
    print(f"step 2/5: training {config}", flush=True)
    result = train(config, data)
    version_dir = args.out / args.version
    print(f"step 3/5: exporting to {version_dir}", flush=True)
    encoder_path, decoder_path = export_graphs(result.model, version_dir)
    print("step 4/5: checking the graphs (onnx.checker, torch parity, dynamic batch)", flush=True)
    parity = check_graphs(result.model, encoder_path, decoder_path, data.held_out.images)
    print(f"    parity on {parity.rows} held-out images: encoder max |diff| "
          f"{parity.encoder_max_abs_diff:.2e}, decoder {parity.decoder_max_abs_diff:.2e}")
    print("step 5/5: pictures and manifest", flush=True)
    (version_dir / "training_history.json").write_text(
        json.dumps([asdict(f) for f in result.history], indent=1) + "\n")
    for path in draw_all(version_dir, data.held_out, result.history):
        print(f"    {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
    manifest = write_manifest(version_dir, MODEL_NAME, args.version, result, parity)
    final = result.final
    print(f"done: {manifest}; held-out -ELBO {final.heldout_neg_elbo:.2f} nats/image "
          f"(reconstruction {final.heldout_reconstruction:.2f} + KL {final.heldout_kl:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
