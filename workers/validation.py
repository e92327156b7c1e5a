"""Validation error under the 4 validation corruptions: the sweep's objective, scored every epoch.

Tuning on the 15 test corruptions would tune on the test set, so the search looks only at
speckle_noise, gaussian_blur, spatter and saturate (the paper's held-out validation corruptions),
applied to the held-out validation split. Scoring every (corruption, severity) pair on every image
would cost 20 passes per epoch; instead each validation image gets one pair, assigned by its
position in the batch, so one pass estimates the mean error over all 20 pairs without bias and
with the same pairing every epoch (the seed depends on the batch index, not on the epoch).
"""
from __future__ import annotations

import zlib

import torch
from torch import nn

from augmix.corruptions import EXTRA_CORRUPTIONS, SEVERITIES, corrupt

VALIDATION_CORRUPTIONS = EXTRA_CORRUPTIONS
PAIRS = [(name, severity) for severity in SEVERITIES for name in VALIDATION_CORRUPTIONS]


def corrupt_for_validation(images: torch.Tensor, batch_index: int, preset: str = "cifar", seed: int = 0) -> torch.Tensor:
    """Row i of uint8 [B,3,H,W] gets PAIRS[i % 20]: each pair sees its own sub-batch, seeded per batch."""
    out = torch.empty_like(images)
    rows = torch.arange(len(images), device=images.device)
    for index, (name, severity) in enumerate(PAIRS):
        take = rows[index::len(PAIRS)]
        if len(take) == 0:
            continue
        generator = torch.Generator(device=images.device)
        generator.manual_seed(zlib.crc32(f"{seed}:{batch_index}:{name}:{severity}".encode()) & 0x7FFFFFFF)
        out[take] = corrupt(images[take], name, severity, preset=preset, generator=generator)
    return out


@torch.inference_mode()
def corrupted_scores(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_index: int,
                     device: torch.device, amp: bool = False, preset: str = "cifar") -> tuple[int, float]:
    """(misclassified images, summed NLL) of one clean uint8 validation batch after its validation
    corruptions. The NLL separates trials whose errors tie (early epochs of a sweep, where models
    still predict one class): the sweep's scheduler breaks ties with it."""
    corrupted = corrupt_for_validation(images.cpu(), batch_index, preset=preset)
    targets = targets.to(device)
    with torch.autocast(device_type=device.type, enabled=amp):
        logits = model(corrupted.to(device).float().mul_(1.0 / 255.0)).float()
    wrong = int((logits.argmax(dim=1) != targets).sum())
    return wrong, float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
