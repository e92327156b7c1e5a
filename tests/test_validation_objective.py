"""The sweep objective's corruption of validation batches: only the 4 held-out corruptions, 20 distinct pairs."""
from __future__ import annotations

import pytest
import torch

from augmix.corruptions import CORRUPTIONS
from workers.validation import PAIRS, VALIDATION_CORRUPTIONS, corrupt_for_validation, corrupted_scores


def _images(count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(count, 3, 8, 8, generator=generator)
    return (torch.nn.functional.interpolate(base, size=32, mode="bilinear") * 255).to(torch.uint8)


def test_validation_corruptions_are_the_held_out_four_in_twenty_distinct_pairs():
    assert set(VALIDATION_CORRUPTIONS) == {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    assert not set(VALIDATION_CORRUPTIONS) & set(CORRUPTIONS)
    assert len(PAIRS) == 20 and len(set(PAIRS)) == 20


def test_same_batch_index_same_corruption_another_differs_and_most_images_change():
    images = _images(60)
    first = corrupt_for_validation(images, batch_index=3)
    assert torch.equal(first, corrupt_for_validation(images, batch_index=3))
    assert not torch.equal(first, corrupt_for_validation(images, batch_index=4))
    changed = (first.int() - images.int()).abs().flatten(1).float().mean(1)
    assert (changed > 0).float().mean() > 0.9
    assert first.dtype == torch.uint8 and first.shape == images.shape


def test_scores_count_errors_and_sum_nll_of_a_constant_predictor():
    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10).index_fill_(1, torch.tensor([2]), 1.0)

    images = _images(40)
    targets = torch.arange(40) % 10
    wrong, nll = corrupted_scores(Constant(), images, targets, 0, torch.device("cpu"))
    assert wrong == 36
    # logits (0,0,1,0,...): the right class has probability e/(e+9) for class 2, 1/(e+9) otherwise
    e = torch.e
    assert nll == pytest.approx(4 * -torch.log(torch.tensor(e / (e + 9))).item() + 36 * torch.log(torch.tensor(e + 9)).item(), rel=1e-5)
