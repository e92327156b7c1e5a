"""-P scoring without Ray: hand-built sequences with known flip probabilities and top-5 distances
go through the worker (a written CIFAR-10-P style folder read back), the aggregation and the
report; bad -P input gets one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from augmix import storage
from augmix.datasets.cifar_p import perturbed_shape, write_perturbed
from orchestrator.cli import main as cli_main
from orchestrator.config import build_config
from orchestrator.evaluation import p_cells_for, sequence_settings
from orchestrator.report import aggregate, markdown_report
from workers.perturb import PerturbationCell, score_perturbation_cell

CLASSES = 10


class PixelClassifier(torch.nn.Module):
    """Predicts class v from an image whose pixels all equal v / 255: logits -|k - v| (ties broken
    towards lower k), so the ranking of frame v is v, v-1, v+1, v-2, ... (clipped to 0..9)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        value = (images[:, 0, 0, 0] * 255).round().unsqueeze(1)
        classes = torch.arange(CLASSES, dtype=torch.float32)
        return -(classes - value).abs() - 1e-3 * classes + self.anchor


def _videos(class_ids: list[list[int]]) -> np.ndarray:
    """uint8 [N, T, 4, 4, 3] whose frame pixels all equal the frame's class id."""
    ids = np.array(class_ids, dtype=np.uint8)
    return np.broadcast_to(ids[:, :, None, None, None], (*ids.shape, 4, 4, 3)).copy()


def _reference_loop(ids: list[list[int]], noise: bool) -> tuple[float, float]:
    """Flip probability and top-5 distance as ImageNet-P/test.py's loops compute them (step 1)."""
    def ranks(v: int) -> np.ndarray:  # 1-based rank of every class for frame value v
        order = sorted(range(CLASSES), key=lambda k: (abs(k - v), k))
        out = np.empty(CLASSES, dtype=int)
        out[order] = np.arange(1, CLASSES + 1)
        return out

    cum = np.cumsum([0] + [1] * 5 + [0] * (CLASSES - 1 - 5))
    flips, distances = 0.0, 0.0
    for video in ids:
        flip, dist = [], []
        previous = video[0]
        for current in video[1:]:
            flip.append(int(previous != current))
            sigma = ranks(current)[np.argsort(ranks(previous))]
            dist.append(np.sum(np.abs(cum[:5] - cum[sigma - 1][:5])))
            if not noise:
                previous = current
        flips += np.mean(flip) / len(ids)
        distances += np.mean(dist) / len(ids)
    return flips, distances


# Video 0 flips once in 3 consecutive pairs (2 of 3 against its first frame), video 1 every pair.
IDS = [[3, 3, 5, 5], [2, 4, 2, 4]]


def test_hand_built_sequences_score_their_known_flip_rates(tmp_path):
    write_perturbed(tmp_path / "p", "rotate", 1, [_videos(IDS)], np.array([3, 2]))
    write_perturbed(tmp_path / "p", "gaussian_noise", 1, [_videos(IDS)], np.array([3, 2]))
    config = build_config({}, [f"storage.uri={tmp_path / 'run'}", "eval.suites=[p]", f"eval.perturbed_path={tmp_path / 'p'}",
                               "eval.perturbations=[gaussian_noise, rotate]"])
    cells = p_cells_for(config)
    assert cells == [PerturbationCell("gaussian_noise", 1), PerturbationCell("rotate", 1)]
    for cell in cells:
        score_perturbation_cell(cell, PixelClassifier(), torch.zeros(0, 3, 4, 4, dtype=torch.uint8),
                                sequence_settings(config))
    results = aggregate(config, cells)
    assert results["flip_probabilities"]["rotate"] == pytest.approx((1 / 3 + 1) / 2)
    assert results["flip_probabilities"]["gaussian_noise"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    for name, noise in (("rotate", False), ("gaussian_noise", True)):
        flips, distance = _reference_loop(IDS, noise)
        assert results["flip_probabilities"][name] == pytest.approx(flips)
        assert results["top5_distances"][name] == pytest.approx(distance)
    assert results["mfr"] == pytest.approx(np.mean(list(results["flip_probabilities"].values())))
    assert results["mt5d"] == pytest.approx(np.mean(list(results["top5_distances"].values())))
    assert "## Perturbation stability (-P)" in markdown_report(results)


def test_a_baseline_turns_flip_probabilities_into_rates(tmp_path):
    write_perturbed(tmp_path / "p", "rotate", 1, [_videos(IDS)], np.array([3, 2]))
    baseline = tmp_path / "alexnet.json"
    storage.write_json(str(baseline), {"flip_probabilities": {"rotate": 0.8}, "top5_distances": {"rotate": 4.0}})
    config = build_config({}, [f"storage.uri={tmp_path / 'run'}", "eval.suites=[p]", f"eval.perturbed_path={tmp_path / 'p'}",
                               "eval.perturbations=[rotate]", f"eval.p_baseline={baseline}"])
    cell = PerturbationCell("rotate", 1)
    score_perturbation_cell(cell, PixelClassifier(), torch.zeros(0, 3, 4, 4, dtype=torch.uint8), sequence_settings(config))
    results = aggregate(config, [cell])
    flips, distance = _reference_loop(IDS, noise=False)
    assert results["flip_rates"]["rotate"] == pytest.approx(flips / 0.8)
    assert results["mt5d"] == pytest.approx(distance / 4.0)


def test_a_p_file_of_the_wrong_shape_gets_one_line(tmp_path):
    np.save(tmp_path / "rotate.npy", np.zeros((2, 4, 4, 3), dtype=np.uint8))  # a -C style file
    with pytest.raises(ValueError, match=r"rotate.npy: uint8 \[2, 4, 4, 3\]; allowed: uint8 \[N, frames >= 2") as error:
        perturbed_shape(tmp_path, "rotate")
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="scale.npy not found"):
        perturbed_shape(tmp_path, "scale")


@pytest.mark.parametrize("override, message", [
    ("eval.perturbations=[fog]", "unknown perturbation 'fog'; allowed: gaussian_noise"),
    ("eval.suites=[q]", "eval.suites.0 = 'q'"),
    ("eval.difficulties=[0]", "difficulties [0] not allowed"),
])
def test_bad_p_settings_exit_2_with_one_line(override, message, tmp_path, capsys):
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "model.pt"), "--out", str(tmp_path),
                     "--set", override]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
