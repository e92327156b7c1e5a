"""Hand-computed cases for augmix.metrics: CE/mCE, RMS calibration, flip probability, top-5 distance."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from augmix import metrics
from augmix.metrics import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    ALEXNET_MEAN_ERRORS,
    IMAGENET_C_CORRUPTIONS,
    class_rankings,
    corruption_summary,
    expected_calibration_error,
    flip_probability,
    flip_rate_summary,
    rms_calibration_error,
    sequence_stability,
    top5_distance,
)


def _one_line_value_error(call, *args, match: str, **kwargs) -> None:
    with pytest.raises(ValueError, match=match) as excinfo:
        call(*args, **kwargs)
    assert "\n" not in str(excinfo.value)


# --- corruption_summary --------------------------------------------------------------------------

def test_alexnet_table_covers_the_15_and_matches_the_augmix_averages():
    assert tuple(ALEXNET_ERRORS) == IMAGENET_C_CORRUPTIONS
    for name, row in ALEXNET_ERRORS.items():
        assert len(row) == 5
        assert np.mean(row) == pytest.approx(ALEXNET_MEAN_ERRORS[name], abs=1e-6), name


def test_alexnet_errors_give_ce_one_everywhere():
    summary = corruption_summary(ALEXNET_ERRORS, ALEXNET_CLEAN_ERROR, baseline="alexnet")
    assert set(summary["ce"]) == set(IMAGENET_C_CORRUPTIONS)
    for name in IMAGENET_C_CORRUPTIONS:
        assert summary["ce"][name] == pytest.approx(1.0)
        assert summary["relative_ce"][name] == pytest.approx(1.0)
    assert summary["mce"] == pytest.approx(1.0)
    assert summary["relative_mce"] == pytest.approx(1.0)


def test_alexnet_normalisation_by_hand():
    half = [e / 2 for e in ALEXNET_ERRORS["gaussian_noise"]]  # sum 4.43214 / 2
    summary = corruption_summary({"gaussian_noise": half}, 0.2, baseline="alexnet")
    assert summary["ce"]["gaussian_noise"] == pytest.approx(0.5)
    expected_relative = (2.21607 - 5 * 0.2) / (4.43214 - 5 * 0.43478)
    assert summary["relative_ce"]["gaussian_noise"] == pytest.approx(expected_relative)
    assert summary["mean_corruption_error"] == pytest.approx(4.43214 / 10)


def test_uce_and_mce_on_a_tiny_table():
    errors = {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.0, 0.0, 0.0, 0.0, 0.5]}
    summary = corruption_summary(errors, 0.05)
    assert summary["ce"] == pytest.approx({"a": 1.5, "b": 0.5})
    assert summary["mce"] == pytest.approx(1.0)
    assert summary["relative_ce"] == pytest.approx({"a": 1.25, "b": 0.25})
    assert summary["relative_mce"] == pytest.approx(0.75)
    assert summary["mean_corruption_error"] == pytest.approx(0.2)
    assert summary["clean_error"] == 0.05


def test_mapping_baseline_with_its_clean_error():
    other = {"a": [0.2, 0.4, 0.6, 0.8, 1.0]}
    ours = {"a": [0.1, 0.2, 0.3, 0.4, 0.5]}
    summary = corruption_summary(ours, 0.1, baseline=other, baseline_clean_error=0.2)
    assert summary["ce"]["a"] == pytest.approx(0.5)
    assert summary["relative_ce"]["a"] == pytest.approx((1.5 - 0.5) / (3.0 - 1.0))
    assert corruption_summary(other, 0.2, baseline=other, baseline_clean_error=0.2)["mce"] == pytest.approx(1.0)


def test_corruption_summary_accepts_tensors_and_arrays():
    summary = corruption_summary({"a": torch.tensor([0.1] * 5), "b": np.full(5, 0.3)}, torch.tensor(0.05))
    assert summary["ce"] == pytest.approx({"a": 0.5, "b": 1.5})


@pytest.mark.parametrize("errors, clean, kwargs, match", [
    ({"a": [0.1, 0.2, 0.3, 0.4]}, 0.1, {}, "4 severities"),
    ({"a": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}, 0.1, {}, "6 severities"),
    ({"a": [10.0, 20.0, 30.0, 40.0, 50.0]}, 0.1, {}, "10.0 is outside"),
    ({"a": [0.1, -0.2, 0.3, 0.4, 0.5]}, 0.1, {}, "-0.2 is outside"),
    ({"a": [0.1, float("nan"), 0.3, 0.4, 0.5]}, 0.1, {}, "nan is outside"),
    ({"a": [0.1] * 5}, 23.9, {}, "clean_error = 23.9"),
    ({"a": "0.1"}, 0.1, {}, "not a sequence"),
    ({}, 0.1, {}, "non-empty mapping"),
    ({"speckle_noise": [0.1] * 5}, 0.1, {"baseline": "alexnet"}, "'speckle_noise' has no errors in the AlexNet"),
    ({"a": [0.1] * 5}, 0.1, {"baseline": "resnet50"}, "baseline = 'resnet50'"),
    ({"a": [0.1] * 5}, 0.1, {"baseline": {"a": [0.2] * 5}}, "baseline_clean_error is None"),
    ({"a": [0.1] * 5}, 0.1, {"baseline": {"b": [0.2] * 5}, "baseline_clean_error": 0.1}, "'a' has no errors"),
    ({"a": [0.1] * 5}, 0.1, {"baseline": {"a": [0.2] * 5}, "baseline_clean_error": 0.2}, "errs more"),
])
def test_corruption_summary_rejects_bad_input(errors, clean, kwargs, match):
    _one_line_value_error(corruption_summary, errors, clean, match=match, **kwargs)


# --- calibration ---------------------------------------------------------------------------------

def _calibrated_bins(confidences: list[float], per_bin: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Each bin: `per_bin` samples at confidence c, of which exactly c*per_bin are correct."""
    conf = np.repeat(confidences, per_bin)
    correct = np.concatenate([np.arange(per_bin) < round(c * per_bin) for c in confidences])
    return conf, correct


def test_perfect_calibration_gives_zero():
    conf, correct = _calibrated_bins([0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95])
    order = np.random.default_rng(0).permutation(conf.size)  # input order must not matter
    assert rms_calibration_error(conf[order], correct[order]) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0, abs=1e-12)


def test_constant_overconfidence_gives_the_gap():
    conf = np.full(1000, 0.9)
    correct = (np.arange(1000) % 5) < 3  # 60 % correct in every bin of 100
    assert rms_calibration_error(conf, correct) == pytest.approx(0.3)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.3)
    assert rms_calibration_error(torch.tensor(conf), torch.tensor(correct)) == pytest.approx(0.3)


def test_last_bin_takes_the_remainder():
    # n=250 -> bins [0,100) and [100,250). Bin 0 is calibrated; bin 1 mixes 100 correct at 0.8 and
    # 50 wrong at 1.0: mean confidence 0.8667, accuracy 0.6667, gap 0.2, weight 150/250.
    conf = np.concatenate([np.full(100, 0.5), np.full(100, 0.8), np.full(50, 1.0)])
    correct = np.concatenate([np.arange(100) < 50, np.ones(100, bool), np.zeros(50, bool)])
    assert rms_calibration_error(conf, correct) == pytest.approx(math.sqrt(150 / 250 * 0.2**2))
    # separate bins of 100/100/50 would give sqrt(0.4 * 0.2^2 + 0.2 * 1.0^2) = 0.465 instead


def test_most_confident_bin_is_counted():
    # The reference loop (range(len(bins) - 1)) skips the last bin and would report 0 here.
    conf = np.concatenate([np.full(100, 0.5), np.full(100, 1.0)])
    correct = np.concatenate([np.arange(100) < 50, np.zeros(100, bool)])
    assert rms_calibration_error(conf, correct) == pytest.approx(math.sqrt(0.5))


def test_fewer_samples_than_a_bin_form_one_bin():
    conf = np.full(10, 0.7)
    correct = np.arange(10) < 5
    assert rms_calibration_error(conf, correct) == pytest.approx(0.2)


def test_bin_size_is_respected():
    # bins of 5: first bin all correct at 0.7 (gap 0.3), second all wrong at 0.7 (gap 0.7)
    conf = np.full(10, 0.7)
    correct = np.arange(10) < 5
    assert rms_calibration_error(conf, correct, bin_size=5) == pytest.approx(math.sqrt(0.5 * 0.09 + 0.5 * 0.49))


@pytest.mark.parametrize("conf, correct, match", [
    ([0.5, 0.6], [1], "equal"),
    ([0.5, 1.5], [1, 0], r"confidences\[1\] = 1.5"),
    ([0.5, float("nan")], [1, 0], r"confidences\[1\] = nan"),
    ([0.5, 0.6], [1, 2], r"correct\[1\] = 2"),
    ([], [], "non-empty"),
    ([[0.5]], [[1]], "1-D"),
])
def test_calibration_rejects_bad_input(conf, correct, match):
    _one_line_value_error(rms_calibration_error, conf, correct, match=match)


def test_calibration_rejects_bad_bin_size():
    _one_line_value_error(rms_calibration_error, [0.5], [1], bin_size=0, match="bin_size = 0")
    _one_line_value_error(expected_calibration_error, [0.5], [1], num_bins=0, match="num_bins = 0")


# --- flip probability and top-5 distance ----------------------------------------------------------

def test_flip_probability_consecutive_versus_first_frame():
    predictions = torch.tensor([[0, 1, 1, 1, 1], [2, 2, 2, 2, 2]])
    assert flip_probability(predictions) == pytest.approx(1 / 8)
    assert flip_probability(predictions, noise=True) == pytest.approx(4 / 8)
    alternating = np.array([[0, 1, 0, 1, 0]])
    assert flip_probability(alternating) == 1.0
    assert flip_probability(alternating, noise=True) == pytest.approx(2 / 4)
    assert flip_probability(alternating, step=2) == 0.0  # pairs (0,2), (1,3), (2,4)


def test_flip_probability_matches_its_definition_on_random_sequences():
    rng = np.random.default_rng(1)
    predictions = rng.integers(0, 3, size=(7, 9))
    for noise, step in [(False, 1), (True, 1), (False, 2), (False, 3)]:
        per_video = []
        for video in predictions:
            if noise:
                pairs = [(0, t) for t in range(1, 9)]
            else:
                pairs = [(t - step, t) for t in range(step, 9)]
            per_video.append(np.mean([video[a] != video[b] for a, b in pairs]))
        assert flip_probability(predictions, noise=noise, step=step) == pytest.approx(np.mean(per_video))


def test_class_rankings_are_ordinal():
    assert class_rankings(torch.tensor([3.0, 1.0, 2.0])).tolist() == [1, 3, 2]
    assert class_rankings([[1.0, 1.0, 0.0]]).tolist() == [[1, 2, 3]]


def _ranks_from_order(order: list[int]) -> list[int]:
    """Class order (best first) -> 1-based rank per class."""
    ranks = [0] * len(order)
    for position, cls in enumerate(order):
        ranks[cls] = position + 1
    return ranks


def test_top5_distance_hand_cases():
    identity = list(range(10))
    swap_top2 = [1, 0] + list(range(2, 10))              # ranks of top5 -> 2,1,3,4,5: distance 2
    fifth_to_last = [0, 1, 2, 3] + list(range(5, 10)) + [4]  # 5th falls out: |5-6| = 1
    first_to_last = list(range(1, 10)) + [0]             # 10,1,2,3,4 -> 5+1+1+1+1 = 9
    for order, expected in [(swap_top2, 2), (fifth_to_last, 1), (first_to_last, 9), (identity, 0)]:
        rankings = torch.tensor([[_ranks_from_order(identity), _ranks_from_order(order)]])
        assert top5_distance(rankings) == pytest.approx(expected)


def test_top5_distance_matches_the_papers_double_sum():
    def paper_distance(sigma):  # sigma[i-1] = new rank of the class ranked i before
        return sum(1 for i in range(1, 6)
                   for j in range(min(i, sigma[i - 1]) + 1, max(i, sigma[i - 1]) + 1) if 1 <= j - 1 <= 5)

    logits = torch.randn(4, 6, 12, generator=torch.Generator().manual_seed(2))
    ranks = class_rankings(logits)
    for noise in (False, True):
        expected = []
        for video in ranks.tolist():
            pairs = [(0, t) for t in range(1, 6)] if noise else [(t - 1, t) for t in range(1, 6)]
            distances = []
            for a, b in pairs:
                by_rank = sorted(range(12), key=lambda c: video[a][c])
                distances.append(paper_distance([video[b][c] for c in by_rank]))
            expected.append(np.mean(distances))
        assert top5_distance(ranks, noise=noise) == pytest.approx(np.mean(expected))


def test_sequence_stability_uses_first_frame_for_noise():
    logits = torch.zeros(1, 3, 6)
    logits[0, 0, 0] = logits[0, 1, 1] = logits[0, 2, 1] = 5.0  # top-1: 0, 1, 1
    assert sequence_stability(logits, "gaussian_noise")["flip_probability"] == 1.0
    assert sequence_stability(logits, "translate")["flip_probability"] == 0.5
    assert metrics.compares_to_first_frame("speckle_noise") and not metrics.compares_to_first_frame("tilt")


@pytest.mark.parametrize("call, args, kwargs, match", [
    (flip_probability, (torch.zeros(2, 3),), {}, "integer class ids"),
    (flip_probability, (torch.zeros(2, 1, dtype=torch.long),), {}, "1 frames"),
    (flip_probability, (torch.zeros(2, 3, dtype=torch.long),), {"noise": True, "step": 2}, "step = 2"),
    (flip_probability, (torch.zeros(2, 3, dtype=torch.long),), {"step": 0}, "step = 0"),
    (flip_probability, (torch.zeros(6, dtype=torch.long),), {}, "2-D"),
    (top5_distance, (torch.ones(1, 2, 6, dtype=torch.long),), {}, "permutations"),
    (top5_distance, (torch.tensor([[[1, 2, 3, 4], [1, 2, 3, 4]]]),), {}, "at least 5"),
])
def test_stability_rejects_bad_input(call, args, kwargs, match):
    _one_line_value_error(call, *args, match=match, **kwargs)


def test_flip_rate_summary_normalises_by_the_baseline():
    summary = flip_rate_summary({"translate": 0.2, "rotate": 0.4}, {"translate": 1.0, "rotate": 3.0},
                                baseline_flip_probabilities={"translate": 0.4, "rotate": 0.8},
                                baseline_top5_distances={"translate": 2.0, "rotate": 2.0})
    assert summary["flip_rate"] == pytest.approx({"translate": 0.5, "rotate": 0.5})
    assert summary["mfr"] == pytest.approx(0.5)
    assert summary["mfp"] == pytest.approx(0.3)
    assert summary["top5_distance_rate"] == pytest.approx({"translate": 0.5, "rotate": 1.5})
    assert summary["mt5d"] == pytest.approx(1.0)


def test_flip_rate_summary_without_baseline_is_the_mean_flip_probability():
    summary = flip_rate_summary({"a": 0.1, "b": 0.3})
    assert summary["mfr"] == pytest.approx(0.2) and summary["mfp"] == pytest.approx(0.2)
    assert "mt5d" not in summary


@pytest.mark.parametrize("args, kwargs, match", [
    (({"a": 1.5},), {}, "fractions"),
    (({"a": -0.1},), {}, "non-negative"),
    (({"a": 0.1},), {"baseline_flip_probabilities": {"b": 0.2}}, "no positive value for 'a'"),
    (({"a": 0.1},), {"baseline_top5_distances": {"a": 0.2}}, "both or neither"),
    (({},), {}, "non-empty"),
])
def test_flip_rate_summary_rejects_bad_input(args, kwargs, match):
    _one_line_value_error(flip_rate_summary, *args, match=match, **kwargs)
