"""A small hyper-parameter sweep: learning rate x batch size, read at several epoch counts.

Each (learning rate, batch size) pair is trained once for the longest epoch count; the held-out
negative ELBO after fewer epochs is read off the same run, which is exactly what training for
that many epochs gives (no schedule depends on the total). Prints a Markdown table and writes
export/sweep_results.json.

    python -m export.sweep
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import asdict
from pathlib import Path

from export.data import load_splits_or_exit
from export.train import TrainConfig, train

LEARNING_RATES = (3e-4, 1e-3, 3e-3)
BATCH_SIZES = (32, 64, 128)
EPOCH_COUNTS = (20, 40, 60, 80)
RESULTS_PATH = Path(__file__).with_name("sweep_results.json")


def run_sweep() -> list[dict]:
    """Train every grid point and return one row per (learning rate, batch size, epochs)."""
    data = load_splits_or_exit()
    rows = []
    grid = list(itertools.product(LEARNING_RATES, BATCH_SIZES))
    for number, (learning_rate, batch_size) in enumerate(grid, start=1):
        print(f"[{number}/{len(grid)}] learning rate {learning_rate:g}, batch size {batch_size}",
              flush=True)
        config = TrainConfig(learning_rate, max(EPOCH_COUNTS), batch_size)
        history = train(config, data, progress=False).history
        best_heldout = min(f.heldout_neg_elbo for f in history)
        for epochs in EPOCH_COUNTS:
            figures = history[epochs - 1]
            rows.append({
                "learning_rate": learning_rate, "batch_size": batch_size, "epochs": epochs,
                **asdict(figures),
                # How far the held-out figure has climbed from its best so far: over-fitting.
                "heldout_above_best_so_far": figures.heldout_neg_elbo - min(
                    f.heldout_neg_elbo for f in history[:epochs]),
            })
        print(f"    held-out -ELBO after {max(EPOCH_COUNTS)} epochs "
              f"{history[-1].heldout_neg_elbo:.2f}, best epoch {best_heldout:.2f}", flush=True)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The sweep as a Markdown table, best held-out figure first."""
    lines = [
        "| learning rate | batch size | epochs | held-out -ELBO | train -ELBO | rises above best |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: r["heldout_neg_elbo"]):
        lines.append(
            f"| {row['learning_rate']:g} | {row['batch_size']} | {row['epochs']} | "
            f"{row['heldout_neg_elbo']:.2f} | {row['train_neg_elbo']:.2f} | "
            f"{row['heldout_above_best_so_far']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    rows = run_sweep()
    RESULTS_PATH.write_text(json.dumps(rows, indent=1))
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
