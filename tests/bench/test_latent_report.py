"""bench.anomaly and bench.latent_report: the AUC, the unlike inputs, the figures, and a small
run of the whole report against a real server."""

import json
import os
from pathlib import Path

import grpc
import numpy as np
import pytest
from vae.v1 import vae_pb2, vae_pb2_grpc

from bench import latent_report
from bench.anomaly import DIGITS, UNLIKE_KINDS, Scores, roc_auc, separation, unlike_inputs
from service.tensors import to_proto

pytestmark = pytest.mark.timeout(120)


def test_perfectly_separated_scores_have_an_auc_of_one_and_reversed_ones_zero():
    normal, anomalous = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0])
    assert roc_auc(normal, anomalous) == 1.0
    assert roc_auc(anomalous, normal) == 0.0


def test_identical_scores_have_an_auc_of_one_half():
    assert roc_auc(np.full(4, 7.0), np.full(3, 7.0)) == 0.5


def test_a_tie_between_the_classes_counts_half():
    # Pairs (normal, anomaly): (1, 2) 1, (1, 3) 1, (2, 2) 1/2, (2, 3) 1: 3.5 of 4.
    assert roc_auc(np.array([1.0, 2.0]), np.array([2.0, 3.0])) == 0.875
    # Ties within a class change nothing: (5, 5) against 4 and 6 is one win, one loss per 5.
    assert roc_auc(np.array([5.0, 5.0]), np.array([4.0, 6.0])) == 0.5


def test_the_auc_is_the_share_of_pairs_in_which_the_anomaly_scores_higher():
    rng = np.random.default_rng(3)
    normal, anomalous = rng.integers(0, 6, 40), rng.integers(2, 9, 30)
    pairs = anomalous[None, :] - normal[:, None]
    by_pairs = ((pairs > 0).sum() + 0.5 * (pairs == 0).sum()) / pairs.size
    assert roc_auc(normal, anomalous) == pytest.approx(by_pairs, abs=1e-12)


def test_the_auc_needs_both_classes():
    with pytest.raises(ValueError, match="each class"):
        roc_auc(np.array([]), np.array([1.0]))


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 784)).astype(np.float32) / 255


def test_each_unlike_kind_has_the_digits_shape_and_stays_in_the_unit_interval(digits):
    inputs = unlike_inputs(digits, seed=7)
    assert list(inputs) == list(UNLIKE_KINDS)
    for kind, images in inputs.items():
        assert images.shape == digits.shape and images.dtype == np.float32, kind
        assert images.min() >= 0 and images.max() <= 1, kind


def test_the_unlike_inputs_are_repeatable_by_seed(digits):
    first, again, other = (unlike_inputs(digits, seed) for seed in (7, 7, 8))
    for kind in UNLIKE_KINDS:
        np.testing.assert_array_equal(first[kind], again[kind])
    assert not np.array_equal(first["noise"], other["noise"])
    assert not np.array_equal(first["shuffled"], other["shuffled"])


def test_shuffled_digits_keep_their_own_pixels_in_an_order_of_their_own(digits):
    shuffled = unlike_inputs(digits, seed=7)["shuffled"]
    np.testing.assert_array_equal(np.sort(shuffled, axis=1), np.sort(digits, axis=1))
    assert not np.array_equal(shuffled, digits)
    # Two copies of one image are shuffled apart: each image has its own permutation.
    twins = unlike_inputs(np.repeat(digits[:1], 2, axis=0), seed=7)["shuffled"]
    assert not np.array_equal(twins[0], twins[1])


def test_inverted_digits_swap_ink_and_background(digits):
    np.testing.assert_array_equal(unlike_inputs(digits, seed=7)["inverted"], 1 - digits)


def test_the_noise_is_uniform_and_unrelated_to_the_digits():
    noise = unlike_inputs(np.zeros((500, 784), np.float32), seed=7)["noise"]
    assert noise.mean() == pytest.approx(0.5, abs=0.01)
    assert (noise < 0.1).mean() == pytest.approx(0.1, abs=0.01)


def test_separation_gives_each_kinds_auc_and_the_bounds_gain_over_the_best_elbo():
    scores = {
        DIGITS: Scores(elbo={1: np.array([-10.0, -12.0]), 4: np.array([-11.0, -13.0])},
                       bound={1: np.array([-10.5, -12.5]), 4: np.array([-9.0, -12.0])}),
        "noise": Scores(elbo={1: np.array([-50.0, -11.5]), 4: np.array([-60.0, -70.0])},
                        bound={1: np.array([-40.0, -30.0]), 4: np.array([-55.0, -66.0])}),
    }
    figures = separation(scores)
    # -ELBO at K=1: digits 10, 12; noise 50, 11.5: noise wins 3 of 4 pairs.
    assert figures["auc"] == {"noise": {"elbo": {"1": 0.75, "4": 1.0},
                                        "bound": {"1": 1.0, "4": 1.0}}}
    # The gain is measured from the ELBO of the most draws (K=4).
    assert figures["gain_nats"][DIGITS] == {"1": 0.5, "4": 1.5}
    assert figures["gain_nats"]["noise"] == {"1": 30.0, "4": 4.5}
    assert figures["mean_neg_log_p_nats"][DIGITS] == {"elbo": {"1": 11.0, "4": 12.0},
                                                      "bound": {"1": 11.5, "4": 10.5}}


@pytest.fixture(scope="module")
def stub(vae_server):
    with grpc.insecure_channel(vae_server.target) as channel:
        yield vae_pb2_grpc.VAEServiceStub(channel)


def test_scoring_in_several_calls_gives_call_i_the_seed_plus_i(stub, digits):
    five = digits[:5]
    elbo, bound = latent_report.score(stub, five, samples=2, seed=40, max_request_rows=4)
    assert elbo.shape == bound.shape == (5,)
    for call, first in enumerate((0, 2, 4)):
        alone = stub.Score(vae_pb2.ScoreRequest(images=to_proto(five[first:first + 2]),
                                                samples=2, seed=40 + call), timeout=30)
        np.testing.assert_array_equal(elbo[first:first + 2], np.array(alone.elbo, np.float64))
        np.testing.assert_array_equal(bound[first:first + 2],
                                      np.array(alone.log_likelihood, np.float64))


def test_a_small_report_writes_its_figures_and_pictures(tmp_path: Path, capsys):
    assert latent_report.main(["--count", "8", "--seed", "3", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "latent_report.json").read_text())
    assert report["settings"]["count_per_kind"] == 8
    assert set(report["auc"]) == set(UNLIKE_KINDS)
    for auc in report["auc"].values():
        assert set(auc["bound"]) == {str(k) for k in latent_report.SAMPLES}
        assert all(0 <= value <= 1 for value in [*auc["elbo"].values(), *auc["bound"].values()])
    for picture in ("score-distributions.png", "morph.png", "variations.png"):
        assert (tmp_path / picture).read_bytes().startswith(b"\x89PNG"), picture
    printed = capsys.readouterr().out
    assert "| noise |" in printed and f"[{3 * 4}/{3 * 4}]" in printed
    assert os.path.relpath(tmp_path / "morph.png") in printed
