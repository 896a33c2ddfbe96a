"""The anomaly-detection case on numpy arrays alone: inputs unlike the digits, and the ROC AUC.

The unlike inputs are built from the held-out digits (or beside them) so that each kind keeps
something of a digit and loses the rest:

- noise: uniform U(0, 1) pixels, nothing of a digit;
- shuffled: each digit's own pixels in a random order of its own (one permutation per image),
  so the amount of ink stays and the strokes go;
- inverted: 1 - x, the strokes kept and the ink swapped with the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# The normal class, and the kinds of input unlike it.
DIGITS = "held-out digits"
UNLIKE_KINDS = ("noise", "shuffled", "inverted")


@dataclass(frozen=True)
class Scores:
    """One kind of input's Score answers, per K: the ELBO and the bound on log p(x), in nats."""

    elbo: dict[int, np.ndarray]
    bound: dict[int, np.ndarray]


def unlike_inputs(digits: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """For (N, pixels) float32 digits in [0, 1], N inputs of each kind in UNLIKE_KINDS, float32
    in [0, 1]; the same `seed` gives the same arrays."""
    noise_seed, shuffle_seed = np.random.SeedSequence(seed).spawn(2)
    return {
        "noise": np.random.default_rng(noise_seed).random(digits.shape, dtype=np.float32),
        "shuffled": np.random.default_rng(shuffle_seed).permuted(digits, axis=1),
        "inverted": (1 - digits).astype(np.float32),
    }


def roc_auc(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    """The ROC AUC of an anomaly score (higher: more anomalous): the chance that an anomaly
    scores above a normal input, a tie counting half (Mann-Whitney U over both counts)."""
    normal, anomalous = len(normal_scores), len(anomaly_scores)
    if normal == 0 or anomalous == 0:
        raise ValueError("the AUC needs at least one score of each class")
    scores = np.concatenate([normal_scores, anomaly_scores]).astype(np.float64)
    _, tie_group, group_sizes = np.unique(scores, return_inverse=True, return_counts=True)
    # Tied scores share the mean of the ranks (1-based) they occupy together.
    last_ranks = np.cumsum(group_sizes)
    mean_ranks = last_ranks - (group_sizes - 1) / 2
    anomaly_rank_sum = mean_ranks[tie_group[normal:]].sum()
    return float((anomaly_rank_sum - anomalous * (anomalous + 1) / 2) / (normal * anomalous))


def separation(scores: dict[str, Scores]) -> dict[str, Any]:
    """The figures of the report from the scores of DIGITS and the unlike kinds.

    auc: per unlike kind, the ROC AUC of -ELBO and of -bound at each K against the digits.
    gain_nats: per kind and K, the mean of bound_K - ELBO, with the ELBO estimated from the
    most draws (the largest K): how much tighter than the ELBO the bound is, on average.
    mean_neg_log_p_nats: per kind, the mean -ELBO and -bound at each K.
    """
    normal = scores[DIGITS]
    most = max(normal.elbo)
    auc = {
        kind: {"elbo": {str(k): roc_auc(-normal.elbo[k], -s.elbo[k]) for k in s.elbo},
               "bound": {str(k): roc_auc(-normal.bound[k], -s.bound[k]) for k in s.bound}}
        for kind, s in scores.items() if kind != DIGITS
    }
    gain = {kind: {str(k): float(np.mean(s.bound[k] - s.elbo[most])) for k in s.bound}
            for kind, s in scores.items()}
    means = {kind: {"elbo": {str(k): float(-s.elbo[k].mean()) for k in s.elbo},
                    "bound": {str(k): float(-s.bound[k].mean()) for k in s.bound}}
             for kind, s in scores.items()}
    return {"auc": auc, "gain_nats": gain, "mean_neg_log_p_nats": means}
