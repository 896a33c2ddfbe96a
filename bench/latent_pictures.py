"""The latent-space report's pictures: the score distributions, a morph strip, variations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from bench.anomaly import DIGITS, Scores  # noqa: E402

COLOURS = {DIGITS: "tab:blue", "noise": "tab:gray", "shuffled": "tab:orange",
           "inverted": "tab:red"}
DPI = 110


def score_distributions(scores: dict[str, Scores], samples: int, path: Path) -> Path:
    """Histograms per kind of input: -log p (the bound at K = `samples`) on a log axis, and
    how much the bound gains over the ELBO for each image."""
    figure, (levels, gains) = plt.subplots(1, 2, figsize=(12, 4.4), dpi=DPI)
    neg_bound = {kind: -s.bound[samples] for kind, s in scores.items()}
    low = min(values.min() for values in neg_bound.values())
    high = max(values.max() for values in neg_bound.values())
    bins = np.geomspace(low / 1.1, high * 1.1, 90)
    for kind, values in neg_bound.items():
        levels.hist(values, bins=bins, histtype="stepfilled", alpha=0.6,
                    color=COLOURS.get(kind), label=f"{kind} ({len(values)})")
    ticks = [tick for tick in (20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
             if low / 1.1 <= tick <= high * 1.1]
    levels.set(xscale="log", xticks=ticks, xticklabels=[f"{tick:,}" for tick in ticks],
               xlabel=f"-log p(x), the bound at K = {samples} (nats, log scale)",
               ylabel="images", title="Score: how unlikely the model finds each input")
    gain = {kind: s.bound[samples] - s.elbo[samples] for kind, s in scores.items()}
    gain_bins = np.linspace(min(0.0, *(values.min() for values in gain.values())),
                            max(values.max() for values in gain.values()) * 1.02, 90)
    for kind, values in gain.items():
        gains.hist(values, bins=gain_bins, histtype="step", linewidth=1.6,
                   color=COLOURS.get(kind), label=f"{kind}: mean {values.mean():.1f}")
    gains.set(xlabel=f"bound at K = {samples} minus the ELBO (nats)", ylabel="images",
              yscale="log", title="The bound's gain over the ELBO, per image")
    for axes in (levels, gains):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def morph_strip(morphs: dict[str, np.ndarray], classes: Sequence[int], path: Path) -> Path:
    """One row per path (`morphs`: name -> (steps, 28, 28)), labelled, t above the columns."""
    rows = list(morphs.items())
    steps = len(rows[0][1])
    figure, grid = plt.subplots(len(rows), steps, figsize=(steps * 0.95, len(rows) * 1.05 + 0.5),
                                dpi=DPI, squeeze=False)
    for row, (name, images) in enumerate(rows):
        for column, image in enumerate(images):
            _show(grid[row, column], image)
        grid[row, 0].set_ylabel(name, fontsize=11)
    for column in range(steps):
        grid[0, column].set_title(f"t = {column / (steps - 1):.2f}", fontsize=9)
    first, last = classes
    figure.suptitle(f"Interpolate from a held-out {first} to a held-out {last}", fontsize=11)
    figure.tight_layout(pad=0.4)
    figure.savefig(path)
    plt.close(figure)
    return path


def variation_grid(originals: np.ndarray, varied: dict[float, np.ndarray],
                   classes: Sequence[int], path: Path) -> Path:
    """Per original digit and temperature, one row: the original at the left, then its
    variations (`varied`: temperature -> (digits, count, 28, 28))."""
    count = next(iter(varied.values())).shape[1]
    rows = [(index, temperature) for index in range(len(originals)) for temperature in varied]
    # A narrow empty column keeps the originals apart from their variations.
    figure, grid = plt.subplots(
        len(rows), count + 2, figsize=((count + 1.4) * 0.9, len(rows) * 0.9 + 0.4), dpi=DPI,
        gridspec_kw={"width_ratios": [1, 0.25] + [1] * count}, squeeze=False,
    )
    for row, (index, temperature) in enumerate(rows):
        _show(grid[row, 0], originals[index])
        grid[row, 0].set_ylabel(f"{classes[index]}, T = {temperature:g}", fontsize=10,
                                rotation=0, ha="right", va="center")
        grid[row, 1].axis("off")
        for column, image in enumerate(varied[temperature][index]):
            _show(grid[row, column + 2], image)
    grid[0, 0].set_title("original", fontsize=10)
    grid[0, 2 + count // 2].set_title(
        f"Variations: {count} posterior draws, the standard deviation times T", fontsize=10,
        loc="center")
    figure.tight_layout(pad=0.4, h_pad=0.3, w_pad=0.2)
    figure.savefig(path)
    plt.close(figure)
    return path


def _show(axes: Axes, image: np.ndarray) -> None:
    """A digit, white on black, without ticks or frame."""
    axes.imshow(np.reshape(image, (28, 28)), cmap="gray", vmin=0, vmax=1)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
