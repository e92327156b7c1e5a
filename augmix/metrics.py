"""Robustness metrics of Hendrycks & Dietterich (ICLR 2019) as used by AugMix (ICLR 2020).

Units, everywhere in this module:
- errors, flip probabilities and calibration errors are fractions in [0, 1] (the papers print x100);
- uCE (no baseline) is a *sum* of five fractional errors, so it lies in [0, 5];
- CE normalised by a baseline (AlexNet) is a ratio: 1.0 means "as bad as AlexNet" (the paper's 100);
- top-5 distance is a count of rank displacements per frame pair, in [0, 15].

The 4 validation corruptions (speckle_noise, gaussian_blur, spatter, saturate) have no public
AlexNet errors, and the AlexNet ImageNet-P flip probabilities are only published in a spreadsheet
linked from hendrycks/robustness issue #49 (not machine-readable here), so neither is hard-coded:
pass another model's numbers as the baseline mapping instead.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from augmix.corruptions import CORRUPTIONS, SEVERITIES
from augmix.perturbations import TEST_PERTURBATIONS

__all__ = [
    "ALEXNET_CLEAN_ERROR",
    "ALEXNET_ERRORS",
    "ALEXNET_MEAN_ERRORS",
    "IMAGENET_C_CORRUPTIONS",
    "IMAGENET_P_PERTURBATIONS",
    "SEVERITIES",
    "class_rankings",
    "compares_to_first_frame",
    "corruption_summary",
    "expected_calibration_error",
    "flip_probability",
    "flip_rate_summary",
    "rms_calibration_error",
    "sequence_stability",
    "top5_distance",
    "video_flips",
    "video_top5_distances",
]

# The 15 test corruptions, in the paper's order (one list, kept with the generators).
IMAGENET_C_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS

# The ten ImageNet-P test perturbations (Hendrycks & Dietterich 2019, Table 3 of AugMix): one list,
# kept with the generators.
IMAGENET_P_PERTURBATIONS: tuple[str, ...] = TEST_PERTURBATIONS

# AlexNet top-1 errors on ImageNet-C, severities 1..5, as fractions. Per-severity values as
# published in timm's ImageNet-C utilities (pytorch-image-models, `imagenetc_alexnet_error_rates_list`,
# the torchvision AlexNet evaluated with hendrycks/robustness ImageNet-C/test.py). Their means are
# exactly ALEXNET_MEAN_ERRORS below (checked by tests/test_metrics.py).
ALEXNET_ERRORS: Mapping[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}

# Per-corruption averages over severities: `ALEXNET_ERR` in google-research/augmix imagenet.py
# ("Raw AlexNet errors taken from https://github.com/hendrycks/robustness").
ALEXNET_MEAN_ERRORS: Mapping[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}

# Clean ImageNet top-1 error of the torchvision AlexNet checkpoint that ImageNet-C/test.py loads
# (torchvision AlexNet_Weights.IMAGENET1K_V1: acc@1 56.522); the ICLR 2019 paper prints 43.5.
ALEXNET_CLEAN_ERROR = 0.43478


# --- corruption errors ---------------------------------------------------------------------------

def _fraction(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} = {value!r} is not a number; allowed: a fraction in [0, 1]") from None
    if not (0.0 <= number <= 1.0):  # also rejects NaN
        raise ValueError(f"{what} = {number!r} is outside [0, 1]; errors are fractions, not percentages")
    return number


def _severity_errors(table: Any, name: str, what: str) -> np.ndarray:
    if isinstance(table, (str, bytes)) or not isinstance(table, (Sequence, np.ndarray, torch.Tensor)):
        raise ValueError(f"{what}[{name!r}] = {table!r} is not a sequence of {len(SEVERITIES)} errors")
    values = list(table.tolist() if hasattr(table, "tolist") else table)
    if len(values) != len(SEVERITIES):
        raise ValueError(f"{what}[{name!r}] has {len(values)} severities; allowed: exactly {len(SEVERITIES)}")
    return np.array([_fraction(v, f"{what}[{name!r}][{s}]") for s, v in enumerate(values)])


def _error_table(errors: Any, what: str) -> dict[str, np.ndarray]:
    if not isinstance(errors, Mapping) or not errors:
        raise ValueError(f"{what} must be a non-empty mapping corruption -> {len(SEVERITIES)} errors, got {errors!r}")
    return {str(name): _severity_errors(row, str(name), what) for name, row in errors.items()}


def _baseline_table(baseline: Any, corruptions: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(baseline, str):
        if baseline != "alexnet":
            raise ValueError(f"baseline = {baseline!r}; allowed: None, 'alexnet' or a mapping corruption -> 5 errors")
        table = {name: np.array(row) for name, row in ALEXNET_ERRORS.items()}
        source = "the AlexNet baseline"
    else:
        table = _error_table(baseline, "baseline")
        source = "baseline"
    for name in corruptions:
        if name not in table:
            raise ValueError(f"corruption {name!r} has no errors in {source}; allowed: {', '.join(sorted(table))}")
    return table


def corruption_summary(errors: Mapping[str, Sequence[float]], clean_error: float,
                       baseline: str | Mapping[str, Sequence[float]] | None = None,
                       baseline_clean_error: float | None = None) -> dict[str, Any]:
    """Per-corruption CE, mCE and relative mCE from a table of errors at 5 severities.

    errors: corruption -> 5 top-1 errors (fractions). mCE averages over the corruptions given, so pass
    the 15 test corruptions (never the 4 validation ones) to reproduce the papers' figures.

    baseline:
      None      CIFAR convention: CE_c = uCE_c = sum_s E_cs (a fraction sum in [0, 5]), relative
                CE_c = sum_s (E_cs - E_clean).
      "alexnet" ImageNet-C convention: CE_c = sum_s E_cs / sum_s E_cs^AlexNet and relative CE_c =
                sum_s (E_cs - E_clean) / sum_s (E_cs^AlexNet - E_clean^AlexNet), ratios (1.0 = AlexNet);
                E_clean^AlexNet is ALEXNET_CLEAN_ERROR unless baseline_clean_error is given.
      mapping   another model's errors (same shape); its clean error must be given as
                baseline_clean_error.

    Returns {"ce", "relative_ce"} (per corruption), "mce", "relative_mce", "clean_error" and
    "mean_corruption_error" (the mean of E_cs over all corruptions and severities, e.g. 0.112 for
    WRN-40-2 + AugMix on CIFAR-10-C: the number the AugMix paper's CIFAR tables print as 11.2).
    """
    table = _error_table(errors, "errors")
    clean = _fraction(clean_error, "clean_error")
    if baseline is None:
        ce = {name: float(row.sum()) for name, row in table.items()}
        relative = {name: float((row - clean).sum()) for name, row in table.items()}
    else:
        reference = _baseline_table(baseline, list(table))
        if baseline_clean_error is None:
            if not isinstance(baseline, str):
                raise ValueError("baseline_clean_error is None; a mapping baseline needs its clean error (fraction)")
            baseline_clean_error = ALEXNET_CLEAN_ERROR
        reference_clean = _fraction(baseline_clean_error, "baseline_clean_error")
        ce, relative = {}, {}
        for name, row in table.items():
            total, relative_total = reference[name].sum(), (reference[name] - reference_clean).sum()
            if total <= 0 or relative_total == 0:
                raise ValueError(f"baseline errors for {name!r} sum to {total!r} (relative {relative_total!r}); "
                                 "allowed: a baseline that errs more than its clean error")
            ce[name] = float(row.sum() / total)
            relative[name] = float((row - clean).sum() / relative_total)
    return {
        "ce": ce,
        "mce": float(np.mean(list(ce.values()))),
        "relative_ce": relative,
        "relative_mce": float(np.mean(list(relative.values()))),
        "mean_corruption_error": float(np.mean(np.stack(list(table.values())))),
        "clean_error": clean,
    }


# --- calibration ---------------------------------------------------------------------------------

def _as_numpy(values: Any, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} has shape {array.shape}; allowed: a non-empty 1-D array")
    return array


def _calibration_inputs(confidences: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    confidence = _as_numpy(confidences, "confidences").astype(np.float64)
    hits = _as_numpy(correct, "correct")
    if confidence.shape != hits.shape:
        raise ValueError(f"confidences has {confidence.size} entries but correct has {hits.size}; allowed: equal")
    bad = ~((confidence >= 0) & (confidence <= 1))
    if bad.any():
        raise ValueError(f"confidences[{int(np.argmax(bad))}] = {float(confidence[bad][0])!r}; allowed: [0, 1]")
    hits_numeric = hits.astype(np.float64)
    not_binary = ~((hits_numeric == 0) | (hits_numeric == 1))
    if not_binary.any():
        raise ValueError(f"correct[{int(np.argmax(not_binary))}] = {hits[not_binary][0].item()!r}; allowed: 0/1 or bool")
    return confidence, hits_numeric


def rms_calibration_error(confidences: Any, correct: Any, bin_size: int = 100) -> float:
    """Root-mean-square calibration error over adaptive (equal-count) confidence bins.

    Samples are sorted by confidence (stable) and cut into consecutive bins of `bin_size`; the last
    bin takes the remainder (n=250 -> bins of 100 and 150; n<bin_size -> a single bin). The result
    is sqrt(sum_b (n_b / n) * (mean confidence_b - accuracy_b)^2), a fraction.

    Unlike the widely copied reference loop (`calib_err` in the AugMix/robustness
    calibration_tools.py: `for i in range(len(bins) - 1)`), every bin is counted: that loop silently
    drops the last, most confident bin, which is where over-confident networks err most.
    """
    if not isinstance(bin_size, int) or bin_size < 1:
        raise ValueError(f"bin_size = {bin_size!r}; allowed: a positive integer")
    confidence, hits = _calibration_inputs(confidences, correct)
    order = np.argsort(confidence, kind="stable")
    count = confidence.size
    bins = max(count // bin_size, 1)
    bin_index = np.minimum(np.arange(count) // bin_size, bins - 1)
    sizes = np.bincount(bin_index, minlength=bins)
    gap = (np.bincount(bin_index, confidence[order], bins) - np.bincount(bin_index, hits[order], bins)) / sizes
    return float(math.sqrt(np.sum(sizes / count * gap**2)))


def expected_calibration_error(confidences: Any, correct: Any, num_bins: int = 15) -> float:
    """ECE over `num_bins` equal-width confidence bins (Guo et al. 2017): sum_b (n_b/n)|conf_b - acc_b|.

    Bins are (lo, hi], with confidence 0 falling into the first bin. Reported for comparison with
    other papers; the AugMix paper uses the RMS version above.
    """
    if not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins = {num_bins!r}; allowed: a positive integer")
    confidence, hits = _calibration_inputs(confidences, correct)
    bin_index = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    gap = np.abs(np.bincount(bin_index, confidence, num_bins) - np.bincount(bin_index, hits, num_bins))
    return float(gap.sum() / confidence.size)


# --- -P sequences: flip probability and top-5 distance --------------------------------------------

def compares_to_first_frame(perturbation: str) -> bool:
    """Noise sequences are i.i.d. draws around the clean frame, so every frame is compared to frame 0;
    all other sequences drift, so consecutive frames are compared (ImageNet-P/test.py: 'noise' in name)."""
    return "noise" in perturbation


def _frame_pairs(frames: int, noise: bool, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (reference frame, compared frame) exactly as ImageNet-P/test.py enumerates them."""
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step = {step!r}; allowed: a positive integer (the ImageNet-P difficulty)")
    if noise and step != 1:
        raise ValueError(f"step = {step} for a noise sequence; allowed: 1 (noise difficulty is the noise level)")
    if frames <= step:
        raise ValueError(f"sequences have {frames} frames; allowed: more than step = {step}")
    current = torch.arange(step, frames) if not noise else torch.arange(1, frames)
    reference = torch.zeros_like(current) if noise else current - step
    return reference, current


def _as_tensor(values: Any, what: str, ndim: int) -> torch.Tensor:
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if tensor.ndim != ndim or tensor.numel() == 0:
        raise ValueError(f"{what} has shape {tuple(tensor.shape)}; allowed: a non-empty {ndim}-D array")
    return tensor


def video_flips(predictions: Any, noise: bool = False, step: int = 1) -> np.ndarray:
    """Per video, the share of compared frame pairs whose top-1 prediction differs: float64 [N].

    predictions: integer class ids [N videos, T frames]. noise=True compares frames 1..T-1 with frame 0;
    otherwise frame t with frame t-step (step = the ImageNet-P difficulty, 1 for the benchmark).
    Kept per video so that cells scored in chunks (or on several workers) average exactly.
    """
    labels = _as_tensor(predictions, "predictions", 2)
    if labels.is_floating_point():
        raise ValueError(f"predictions has dtype {labels.dtype}; allowed: integer class ids (argmax of logits)")
    reference, current = _frame_pairs(labels.shape[1], noise, step)
    return (labels[:, current] != labels[:, reference]).double().mean(dim=1).cpu().numpy()


def flip_probability(predictions: Any, noise: bool = False, step: int = 1) -> float:
    """Probability that the top-1 prediction changes between compared frames of a -P sequence.

    Averaged per video, then over videos (every video has the same number of pairs), as
    ImageNet-P/test.py's flip_prob; see video_flips for the frame pairs.
    """
    return float(video_flips(predictions, noise=noise, step=step).mean())


def class_rankings(logits: Any) -> torch.Tensor:
    """1-based rank of every class per frame (rank 1 = top-1), ties broken by class index.

    Same as scipy.stats.rankdata(-frame, method='ordinal') in ImageNet-P/test.py. logits [..., C].
    """
    scores = logits if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))
    if scores.ndim < 1 or scores.numel() == 0:
        raise ValueError(f"logits has shape {tuple(scores.shape)}; allowed: [..., C] with C >= 1")
    scores = scores.float()
    order = torch.argsort(-scores, dim=-1, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(1, scores.shape[-1] + 1, device=order.device).expand_as(order)
    return ranks.scatter_(-1, order, positions)


def video_top5_distances(rankings: Any, noise: bool = False, step: int = 1) -> np.ndarray:
    """Per video, the mean top-5 distance over its compared frame pairs: float64 [N] (see top5_distance)."""
    ranks = _as_tensor(rankings, "rankings", 3)
    classes = ranks.shape[-1]
    if classes < 5:
        raise ValueError(f"rankings have {classes} classes; allowed: at least 5 for a top-5 distance")
    expected = torch.arange(1, classes + 1, device=ranks.device)
    if not torch.equal(torch.sort(ranks.long(), dim=-1).values, expected.expand_as(ranks)):
        raise ValueError("rankings are not permutations of 1..C per frame; use class_rankings(logits)")
    reference, current = _frame_pairs(ranks.shape[1], noise, step)
    top5 = torch.argsort(ranks[:, reference].long(), dim=-1)[..., :5]
    moved = torch.gather(ranks[:, current].long(), -1, top5).clamp(max=6)
    distance = (moved - torch.arange(1, 6, device=ranks.device)).abs().sum(-1)
    return distance.double().mean(dim=1).cpu().numpy()


def top5_distance(rankings: Any, noise: bool = False, step: int = 1) -> float:
    """Mean top-5 distance between compared frames of -P sequences (Hendrycks & Dietterich 2019).

    rankings: [N, T, C] 1-based class ranks per frame (class_rankings(logits)). For a frame pair, take
    the reference frame's top-5 classes in order, look up their ranks s_1..s_5 in the other frame, and
    count sum_k |k - min(s_k, 6)|: how far the top-5 list moved, ranks beyond 5 counting as 6. This is
    the closed form of the paper's double sum (and of `dist(..., 'top5')` in ImageNet-P/test.py).
    Frame pairs as in flip_probability.
    """
    return float(video_top5_distances(rankings, noise=noise, step=step).mean())


def sequence_stability(logits: Any, perturbation: str, step: int = 1) -> dict[str, float]:
    """Flip probability and top-5 distance of one perturbation's sequences from logits [N, T, C]."""
    scores = _as_tensor(logits, "logits", 3)
    noise = compares_to_first_frame(perturbation)
    return {
        "flip_probability": flip_probability(scores.argmax(-1), noise=noise, step=step),
        "top5_distance": top5_distance(class_rankings(scores), noise=noise, step=step),
    }


def _positive_table(values: Any, what: str) -> dict[str, float]:
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"{what} must be a non-empty mapping perturbation -> value, got {values!r}")
    table = {}
    for name, value in values.items():
        number = float(value)
        if not (number >= 0 and math.isfinite(number)):
            raise ValueError(f"{what}[{name!r}] = {value!r}; allowed: a finite non-negative number")
        table[str(name)] = number
    return table


def _normalised(values: dict[str, float], baseline: Any, what: str) -> dict[str, float]:
    if baseline is None:
        return dict(values)
    reference = _positive_table(baseline, what)
    rates = {}
    for name, value in values.items():
        if reference.get(name, 0.0) <= 0:
            raise ValueError(f"{what} has no positive value for {name!r}; allowed keys: {', '.join(sorted(reference))}")
        rates[name] = value / reference[name]
    return rates


def flip_rate_summary(flip_probabilities: Mapping[str, float],
                      top5_distances: Mapping[str, float] | None = None,
                      baseline_flip_probabilities: Mapping[str, float] | None = None,
                      baseline_top5_distances: Mapping[str, float] | None = None) -> dict[str, Any]:
    """FR per perturbation, mFR and mT5D (Hendrycks & Dietterich 2019, ImageNet-P).

    FR_p = FP_p / FP_p^baseline and mFR = mean_p FR_p (ratios, 1.0 = baseline); likewise the T5D rates
    and mT5D. Without a baseline (CIFAR-P convention) FR_p = FP_p, so mFR is the mean flip
    probability (a fraction) and mT5D the mean top-5 distance. No AlexNet constants are built in (see
    the module docstring). mFR averages the perturbations given: pass the 10 ImageNet-P test ones.
    """
    probabilities = _positive_table(flip_probabilities, "flip_probabilities")
    if any(value > 1 for value in probabilities.values()):
        raise ValueError(f"flip_probabilities = {probabilities!r}; allowed: fractions in [0, 1]")
    rates = _normalised(probabilities, baseline_flip_probabilities, "baseline_flip_probabilities")
    summary: dict[str, Any] = {
        "flip_probability": probabilities,
        "mfp": float(np.mean(list(probabilities.values()))),
        "flip_rate": rates,
        "mfr": float(np.mean(list(rates.values()))),
    }
    if top5_distances is not None:
        distances = _positive_table(top5_distances, "top5_distances")
        distance_rates = _normalised(distances, baseline_top5_distances, "baseline_top5_distances")
        summary.update(top5_distance=distances, top5_distance_rate=distance_rates,
                       mt5d=float(np.mean(list(distance_rates.values()))))
    elif baseline_top5_distances is not None:
        raise ValueError("baseline_top5_distances given without top5_distances; allowed: both or neither")
    return summary
