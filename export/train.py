"""Train the VAE on the MNIST subset, seeded and repeatable, logging the ELBO per epoch.

    python -m export.train --epochs 60 --learning-rate 3e-3 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from export.data import DEFAULT_DATA_PATH, DataSplits, Digits, load_splits_or_exit
from export.model import VAE, ModelSizes, neg_elbo

EVAL_SEED = 1234  # the held-out figure uses the same noise every epoch, so epochs compare


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. The defaults are the tuned ones (see `make sweep` and the README)."""

    learning_rate: float = 3e-3
    epochs: int = 60
    batch_size: int = 64
    seed: int = 0
    sizes: ModelSizes = field(default_factory=ModelSizes)


@dataclass(frozen=True)
class EpochFigures:
    """Mean per-image figures in nats for one epoch."""

    epoch: int
    train_neg_elbo: float
    train_reconstruction: float
    train_kl: float
    heldout_neg_elbo: float
    heldout_reconstruction: float
    heldout_kl: float


@dataclass
class TrainResult:
    model: VAE
    config: TrainConfig
    history: list[EpochFigures]

    @property
    def final(self) -> EpochFigures:
        return self.history[-1]


@torch.no_grad()
def evaluate(model: VAE, digits: Digits, batch_size: int = 1000) -> tuple[float, float]:
    """Mean reconstruction and KL per image over ``digits``, with fixed noise."""
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    images = torch.from_numpy(digits.images)
    reconstruction = kl = 0.0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        terms = neg_elbo(model, batch, generator)
        reconstruction += float(terms.reconstruction) * len(batch)
        kl += float(terms.kl) * len(batch)
    return reconstruction / len(images), kl / len(images)


def train(config: TrainConfig, data: DataSplits, progress: bool = True) -> TrainResult:
    """Fit a fresh VAE to ``data.train`` and record train and held-out figures every epoch."""
    torch.manual_seed(config.seed)
    model = VAE(config.sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    images = torch.from_numpy(data.train.images)
    shuffle = torch.Generator().manual_seed(config.seed)
    noise = torch.Generator().manual_seed(config.seed + 1)
    history: list[EpochFigures] = []
    epochs = tqdm(range(1, config.epochs + 1), desc="training", unit="epoch", disable=not progress)
    for epoch in epochs:
        model.train()
        reconstruction = kl = 0.0
        for index in torch.randperm(len(images), generator=shuffle).split(config.batch_size):
            terms = neg_elbo(model, images[index], noise)
            optimizer.zero_grad()
            terms.neg_elbo.backward()
            optimizer.step()
            reconstruction += float(terms.reconstruction.detach()) * len(index)
            kl += float(terms.kl.detach()) * len(index)
        heldout_reconstruction, heldout_kl = evaluate(model, data.held_out)
        figures = EpochFigures(
            epoch=epoch,
            train_neg_elbo=(reconstruction + kl) / len(images),
            train_reconstruction=reconstruction / len(images),
            train_kl=kl / len(images),
            heldout_neg_elbo=heldout_reconstruction + heldout_kl,
            heldout_reconstruction=heldout_reconstruction,
            heldout_kl=heldout_kl,
        )
        history.append(figures)
        epochs.set_postfix(heldout=f"{figures.heldout_neg_elbo:.2f}")
        if progress:
            tqdm.write(format_epoch(figures, config.epochs))
    return TrainResult(model, config, history)


def format_epoch(figures: EpochFigures, epochs: int) -> str:
    """One log line: train and held-out negative ELBO with their two parts, nats per image."""
    return (
        f"epoch {figures.epoch:3d}/{epochs}  -ELBO nats/image: "
        f"train {figures.train_neg_elbo:7.2f} (rec {figures.train_reconstruction:7.2f} + "
        f"kl {figures.train_kl:5.2f})  held-out {figures.heldout_neg_elbo:7.2f} "
        f"(rec {figures.heldout_reconstruction:7.2f} + kl {figures.heldout_kl:5.2f})"
    )


def parse_config(argv: list[str] | None) -> tuple[TrainConfig, Path, Path | None]:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description="Train the VAE on the MNIST subset.")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_PATH)
    parser.add_argument("--history-out", type=Path, help="write the per-epoch figures as JSON")
    args = parser.parse_args(argv)
    config = TrainConfig(args.learning_rate, args.epochs, args.batch_size, args.seed)
    return config, args.data, args.history_out


def main(argv: list[str] | None = None) -> int:
    config, data_path, history_out = parse_config(argv)
    result = train(config, load_splits_or_exit(data_path))
    if history_out:
        history_out.write_text(json.dumps([asdict(f) for f in result.history], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
